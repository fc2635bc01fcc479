"""The request and response models both faces validate with; the REST API also publishes them as OpenAPI."""
