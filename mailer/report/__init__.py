"""The daily statistics e-mail: queries, content, SMTP delivery and the once-a-day actor and its schedule."""
