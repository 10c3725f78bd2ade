"""Images for skiff's runtime: references, registry pulls, archive imports, the on-disk store,
layer unpacking, and the CRI ImageService.

Modules, bottom up (each states its own contract):

- ``reference``  parse and normalize image references the way Docker does.
- ``manifest``   pure parsing of OCI/Docker manifests, indexes and configs; platform choice.
- ``records``    what the store records about an image (frozen values, JSON form).
- ``store``      content-addressed blobs, unpacked layers, the image index and leases.
- ``unpack``     one layer tar -> one directory, whiteouts as overlayfs expects, diff_id checked.
- ``registry``   Docker Registry HTTP API v2 client: manifests, blobs, bearer-token auth.
- ``pull``       registry -> store, verified and committed in one step.
- ``importer``   OCI layout archives and ``docker save`` tarballs -> store.
- ``service``    CRI ``runtime.v1`` ImageService on grpc.aio.
"""
