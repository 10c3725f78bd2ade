"""etcd's error statuses, with etcd's exact messages (clients match on them).

Each is a `KVError(code, message)` where `code` names a gRPC status code; the server turns it
into that status. Keeping them in one place keeps the wording identical everywhere.
"""
from kvstore.commands import KVError

COMPACTED = KVError("OUT_OF_RANGE", "etcdserver: mvcc: required revision has been compacted")
FUTURE_REV = KVError("OUT_OF_RANGE", "etcdserver: mvcc: required revision is a future revision")
KEY_NOT_FOUND = KVError("INVALID_ARGUMENT", "etcdserver: key not found")
EMPTY_KEY = KVError("INVALID_ARGUMENT", "etcdserver: key is not provided")
VALUE_PROVIDED = KVError("INVALID_ARGUMENT", "etcdserver: value is provided")
LEASE_PROVIDED = KVError("INVALID_ARGUMENT", "etcdserver: lease is provided")
TOO_MANY_OPS = KVError("INVALID_ARGUMENT", "etcdserver: too many operations in txn request")
DUPLICATE_KEY = KVError("INVALID_ARGUMENT", "etcdserver: duplicate key given in txn request")
REQUEST_TOO_LARGE = KVError("INVALID_ARGUMENT", "etcdserver: request is too large")
LEASE_NOT_FOUND = KVError("NOT_FOUND", "etcdserver: requested lease not found")
LEASE_EXIST = KVError("FAILED_PRECONDITION", "etcdserver: lease already exists")
LEASE_TTL_TOO_LARGE = KVError("OUT_OF_RANGE", "etcdserver: too large lease TTL")
NO_LEADER = KVError("UNAVAILABLE", "etcdserver: no leader")
TIMEOUT = KVError("UNAVAILABLE", "etcdserver: request timed out")
LEADER_CHANGED = KVError("UNAVAILABLE", "etcdserver: leader changed")
MEMBER_NOT_FOUND = KVError("NOT_FOUND", "etcdserver: member not found")
PEER_URL_EXIST = KVError("FAILED_PRECONDITION", "etcdserver: Peer URLs already exists")
