"""Mapping between etcd's wire messages (protobuf) and the store's command dataclasses.

Requests become frozen dataclasses before they are replicated (so the log holds plain values, not
protobuf objects), and results become etcd response messages on the way out.
"""
from __future__ import annotations

from kvstore.commands import (
    Compare, CompareResult, CompareTarget, DeleteRange, DeleteResult, Event, KeyValue,
    Put, PutResult, Range, RangeResult, SortOrder, SortTarget, Txn, TxnOp, TxnResult, OpResult,
)
from protos.etcd.etcdserverpb import rpc_pb2
from protos.etcd.mvccpb import kv_pb2


def range_from_pb(req: rpc_pb2.RangeRequest) -> Range:
    return Range(
        key=req.key, range_end=req.range_end, limit=req.limit, revision=req.revision,
        sort_order=SortOrder(req.sort_order), sort_target=SortTarget(req.sort_target),
        keys_only=req.keys_only, count_only=req.count_only,
        min_mod_revision=req.min_mod_revision, max_mod_revision=req.max_mod_revision,
        min_create_revision=req.min_create_revision, max_create_revision=req.max_create_revision,
    )


def put_from_pb(req: rpc_pb2.PutRequest) -> Put:
    return Put(key=req.key, value=req.value, lease=req.lease, prev_kv=req.prev_kv,
               ignore_value=req.ignore_value, ignore_lease=req.ignore_lease)


def delete_from_pb(req: rpc_pb2.DeleteRangeRequest) -> DeleteRange:
    return DeleteRange(key=req.key, range_end=req.range_end, prev_kv=req.prev_kv)


def compare_from_pb(c: rpc_pb2.Compare) -> Compare:
    target = CompareTarget(c.target)
    operand: int | bytes
    if target == CompareTarget.VALUE:
        operand = c.value
    elif target == CompareTarget.VERSION:
        operand = c.version
    elif target == CompareTarget.CREATE:
        operand = c.create_revision
    elif target == CompareTarget.MOD:
        operand = c.mod_revision
    else:
        operand = c.lease
    return Compare(key=c.key, target=target, result=CompareResult(c.result), operand=operand,
                   range_end=c.range_end)


def request_op_from_pb(op: rpc_pb2.RequestOp) -> TxnOp:
    which = op.WhichOneof("request")
    if which == "request_range":
        return range_from_pb(op.request_range)
    if which == "request_put":
        return put_from_pb(op.request_put)
    if which == "request_delete_range":
        return delete_from_pb(op.request_delete_range)
    if which == "request_txn":
        return txn_from_pb(op.request_txn)
    raise ValueError("etcdserver: empty request op in txn")


def txn_from_pb(req: rpc_pb2.TxnRequest) -> Txn:
    return Txn(
        compare=tuple(compare_from_pb(c) for c in req.compare),
        success=tuple(request_op_from_pb(o) for o in req.success),
        failure=tuple(request_op_from_pb(o) for o in req.failure),
    )


def kv_to_pb(kv: KeyValue) -> kv_pb2.KeyValue:
    return kv_pb2.KeyValue(key=kv.key, create_revision=kv.create_revision, mod_revision=kv.mod_revision,
                           version=kv.version, value=kv.value, lease=kv.lease)


def event_to_pb(ev: Event, with_prev: bool) -> kv_pb2.Event:
    msg = kv_pb2.Event(type=ev.type.name, kv=kv_to_pb(ev.kv))
    if with_prev and ev.prev_kv is not None:
        msg.prev_kv.CopyFrom(kv_to_pb(ev.prev_kv))
    return msg


def range_result_to_pb(res: RangeResult, header: rpc_pb2.ResponseHeader) -> rpc_pb2.RangeResponse:
    return rpc_pb2.RangeResponse(header=header, kvs=[kv_to_pb(kv) for kv in res.kvs], more=res.more,
                                 count=res.count)


def put_result_to_pb(res: PutResult, header: rpc_pb2.ResponseHeader) -> rpc_pb2.PutResponse:
    resp = rpc_pb2.PutResponse(header=header)
    if res.prev_kv is not None:
        resp.prev_kv.CopyFrom(kv_to_pb(res.prev_kv))
    return resp


def delete_result_to_pb(res: DeleteResult, header: rpc_pb2.ResponseHeader) -> rpc_pb2.DeleteRangeResponse:
    return rpc_pb2.DeleteRangeResponse(header=header, deleted=res.deleted,
                                       prev_kvs=[kv_to_pb(kv) for kv in res.prev_kvs])


def txn_result_to_pb(res: TxnResult, header: rpc_pb2.ResponseHeader) -> rpc_pb2.TxnResponse:
    return rpc_pb2.TxnResponse(header=header, succeeded=res.succeeded,
                               responses=[response_op_to_pb(r, header) for r in res.responses])


def response_op_to_pb(res: OpResult, header: rpc_pb2.ResponseHeader) -> rpc_pb2.ResponseOp:
    if isinstance(res, RangeResult):
        return rpc_pb2.ResponseOp(response_range=range_result_to_pb(res, header))
    if isinstance(res, PutResult):
        return rpc_pb2.ResponseOp(response_put=put_result_to_pb(res, header))
    if isinstance(res, DeleteResult):
        return rpc_pb2.ResponseOp(response_delete_range=delete_result_to_pb(res, header))
    if isinstance(res, TxnResult):
        return rpc_pb2.ResponseOp(response_txn=txn_result_to_pb(res, header))
    raise TypeError(f"unexpected txn response {res!r}")

