"""The service's operations: each one is the store call, the engine's wake-up and the log line in one place.

The REST API (`mailer.api`) and the admin web UI (`mailer.admin`) both call these functions, so a rule and
its side effects live here once; the faces only parse requests and render answers.
"""
