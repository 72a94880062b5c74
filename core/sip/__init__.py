"""SIP: the message scanner, transactions (RFC 3261 §17), dialogs (§12) and INVITE sessions (§13-15)."""
