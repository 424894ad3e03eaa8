"""SMTP and IMAP intake: protocol work, limits and one durable write."""
