"""p2psip: serverless real-time communication over SIP."""

__version__ = "0.1.0"
