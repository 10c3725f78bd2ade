"""Who may do what: certificates (certs), identities (authn) and roles (authz) for the API server."""
