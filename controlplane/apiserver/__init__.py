"""The API server: registry, validation, admission, watch cache, authentication and authorization."""
