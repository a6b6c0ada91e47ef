"""mailer: delivers email over SMTP and tracks it; each message is sent at most once."""
