"""The API client side shared by the control plane and the node agent: the scheme (which kinds
exist and how they are named), the codec, the typed client, informers and the work queue."""
