"""The OAuth 2.0 grants SMART uses, one module each, on authlib's grant classes."""
