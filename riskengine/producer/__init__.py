"""The trade simulator service: REST API, scenario injection, audit trail."""
