"""The Deployment controller: one ReplicaSet per pod template, rolled from old to new.

`sync(key)` is Kubernetes' syncDeployment over the informer caches (deployments, replicasets,
pods), working on copies:

1. **Claim** the namespace's ReplicaSets: ours while the selector matches, released when it stops
   matching, matching orphans adopted after a fresh read of the Deployment (as for pods in
   replicaset.py). A Deployment being deleted only has its status synced.
2. **Paused**: Progressing becomes Unknown/DeploymentPaused (DeploymentResumed on resume);
   a paused Deployment only scales and prunes history - no new ReplicaSet, no rollout.
3. **Scaling event** (an active ReplicaSet's `desired-replicas` annotation differs from
   spec.replicas): resize without rolling - the single active (or newest) ReplicaSet takes the
   new size; during a rollout the surplus or deficit is shared proportionally to each
   ReplicaSet's size, larger ones first (deployment_util.proportional_sizes).
4. **RollingUpdate**: find or create the new ReplicaSet (`<name>-<hash>`, revision one past the
   old ones), scale it up while the total stays within replicas + maxSurge, then scale old ones
   down while at least replicas - maxUnavailable pods stay available: unhealthy old pods go
   first (cleanupUnhealthyReplicas), then old ReplicaSets oldest first. A ReplicaSet counts at
   most spec.replicas available pods here (its status may still count pods it is deleting).
   **Recreate**: old ReplicaSets to 0; once no old pod is running, the new one to replicas.
5. **History**: once the rollout is complete (and while paused), old ReplicaSets with no pods
   beyond revisionHistoryLimit are deleted, lowest revision first.
6. **Status**: replicas, updated/ready/available/unavailableReplicas, observedGeneration, the
   Available condition, and Progressing (NewReplicaSetCreated, FoundNewReplicaSet,
   ReplicaSetUpdated, NewReplicaSetAvailable, ProgressDeadlineExceeded once nothing progressed
   for progressDeadlineSeconds). A rollout still in progress is looked at again when its
   deadline would pass.

Writes: ReplicaSets are updated with the resourceVersion read (a stale cache conflicts and the
key is retried); the Deployment's revision annotation is merge-patched, its status written with
update_status. Rollback is not done here: `skiff rollout undo` copies an old ReplicaSet's
template into the Deployment, and this controller then finds that ReplicaSet as the new one
and gives it the next revision.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import grpc
from google.protobuf.message import Message

from controlplane.client.api import AlreadyExistsError, ApiStatusError, NotFoundError
from controlplane.client.informer import NAMESPACE_INDEX, OWNER_INDEX, controller_owner_index, object_key
from controlplane.client.selectors import LabelSelector, SelectorError, from_label_selector_proto
from controlplane.client.timeutil import format_time, parse_time
from controlplane.controllers import deployment_util as du
from controlplane.controllers.base import Controller, ControllerContext
from controlplane.controllers.podutil import controller_ref, get_controller_of
from controlplane.controllers.replicaset import owner_references_patch
from protos.skiff.api.v1 import apps_pb2, core_pb2

log = logging.getLogger(__name__)

RS = apps_pb2.ReplicaSet
Deployment = apps_pb2.Deployment


def _copy(obj: Any) -> Any:
    out = type(obj)()
    out.CopyFrom(obj)
    return out


class DeploymentController(Controller):
    name = "deployment"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.deployments = self.informer("deployments")
        self.replica_sets = self.informer("replicasets")
        self.pods = self.informer("pods")
        self.replica_sets.add_index(OWNER_INDEX, controller_owner_index)
        self.pods.add_index(OWNER_INDEX, controller_owner_index)
        self.deployments.add_handler(self.enqueue, lambda old, new: self.enqueue(new), self.enqueue)
        self.replica_sets.add_handler(self._rs_changed, self._rs_updated, self._rs_changed)
        self.pods.add_handler(None, None, self._pod_deleted)

    # ---- handlers: keys only -----------------------------------------------------------------

    def _deployment_of(self, obj: Message) -> Deployment | None:
        ref = get_controller_of(obj)
        if ref is None or ref.kind != "Deployment":
            return None
        d = self.deployments.get(f"{obj.metadata.namespace}/{ref.name}")  # type: ignore[attr-defined]
        return d if isinstance(d, Deployment) and d.metadata.uid == ref.uid else None

    def _enqueue_selecting(self, rs: RS) -> None:
        for d in self.deployments.by_index(NAMESPACE_INDEX, rs.metadata.namespace):
            try:
                if from_label_selector_proto(d.spec.selector).matches(rs.metadata.labels):  # type: ignore[attr-defined]
                    self.enqueue(d)
            except SelectorError:
                continue

    def _rs_changed(self, rs: Message) -> None:
        assert isinstance(rs, RS)
        d = self._deployment_of(rs)
        if d is not None:
            self.enqueue(d)
        elif get_controller_of(rs) is None:
            self._enqueue_selecting(rs)

    def _rs_updated(self, old: Message, new: Message) -> None:
        assert isinstance(old, RS) and isinstance(new, RS)
        if old.metadata.resource_version == new.metadata.resource_version:
            return
        old_d, new_d = self._deployment_of(old), self._deployment_of(new)
        if old_d is not None and (new_d is None or old_d.metadata.uid != new_d.metadata.uid):
            self.enqueue(old_d)
        self._rs_changed(new)

    def _pod_deleted(self, pod: Message) -> None:
        """Recreate waits for the old pods to go: their deletion may let it continue."""
        rs = None
        ref = get_controller_of(pod)
        if ref is not None and ref.kind == "ReplicaSet":
            rs = self.replica_sets.get(f"{pod.metadata.namespace}/{ref.name}")  # type: ignore[attr-defined]
        d = self._deployment_of(rs) if rs is not None else None
        if d is not None and d.spec.strategy.type == "Recreate":
            self.enqueue(d)

    # ---- sync --------------------------------------------------------------------------------

    async def sync(self, key: str) -> None:
        cached = self.deployments.get(key)
        if cached is None:
            return
        d: Deployment = _copy(cached)
        try:
            selector = from_label_selector_proto(d.spec.selector if d.spec.HasField("selector") else None)
        except SelectorError as err:
            log.warning("deployment %s: invalid selector: %s", key, err)
            return
        if selector.empty:
            await self.recorder.event(d, "Warning", "SelectingAll",
                                      "This deployment is selecting all pods. A non-empty selector is required.")
            if d.status.observed_generation < d.metadata.generation:
                d.status.observed_generation = d.metadata.generation
                await self._write_status(d)
            return
        rss = await self.claim_replica_sets(d, selector)
        if d.metadata.deletion_timestamp:
            await self.sync_status_only(d, rss)
            return
        await self.check_paused_conditions(d)
        if d.spec.paused or await self.is_scaling_event(d, rss):
            await self.sync_scale(d, rss)
        elif d.spec.strategy.type == "Recreate":
            await self.rollout_recreate(d, rss)
        else:
            await self.rollout_rolling(d, rss)

    def _now(self) -> tuple[float, str]:
        now = self.ctx.wall.now()
        return now, format_time(now)

    # ---- claiming ReplicaSets ----------------------------------------------------------------

    async def claim_replica_sets(self, d: Deployment, selector: LabelSelector) -> list[RS]:
        """Copies of our ReplicaSets, adopting matching orphans and releasing ours that stopped
        matching (see replicaset.py's claim_pods for the rules)."""
        out: list[RS] = []
        can_adopt: bool | None = None
        deleting = bool(d.metadata.deletion_timestamp)
        for cached in self.replica_sets.by_index(NAMESPACE_INDEX, d.metadata.namespace):
            assert isinstance(cached, RS)
            ref = get_controller_of(cached)
            matches = selector.matches(cached.metadata.labels)
            if ref is not None:
                if ref.uid != d.metadata.uid:
                    continue
                if matches:
                    out.append(_copy(cached))
                elif not deleting:
                    await self._set_owner(cached, [r for r in cached.metadata.owner_references if r.uid != ref.uid])
                continue
            if deleting or not matches or cached.metadata.deletion_timestamp:
                continue
            if can_adopt is None:
                can_adopt = await self._can_adopt(d)
            if can_adopt:
                refs = [*cached.metadata.owner_references, controller_ref(d)]
                adopted = await self._set_owner(cached, refs)
                if adopted is not None:
                    out.append(adopted)
        return out

    async def _can_adopt(self, d: Deployment) -> bool:
        try:
            fresh: Any = await self.ctx.client.get("deployments", d.metadata.name, d.metadata.namespace)
        except NotFoundError:
            return False
        return bool(fresh.metadata.uid == d.metadata.uid and not fresh.metadata.deletion_timestamp)

    async def _set_owner(self, rs: RS, refs: Sequence[Any]) -> RS | None:
        patch = owner_references_patch(refs, rs)
        try:
            out = await self.ctx.client.patch("replicasets", rs.metadata.name, patch, rs.metadata.namespace)
        except NotFoundError:
            return None
        assert isinstance(out, RS)
        return out

    # ---- the new ReplicaSet and revisions ----------------------------------------------------

    async def get_all(self, d: Deployment, rss: list[RS], create: bool) -> tuple[RS | None, list[RS]]:
        """(the new ReplicaSet - made if asked and missing -, the old ones), revisions synced."""
        existing = du.find_new_rs(d, rss)
        old = [rs for rs in rss if rs is not existing]
        new_rs = await self.get_new_replica_set(d, rss, old, existing, create)
        if new_rs is not None and existing is None:
            rss.append(new_rs)
        return new_rs, old

    async def get_new_replica_set(self, d: Deployment, rss: list[RS], old: list[RS], existing: RS | None,
                                  create: bool) -> RS | None:
        new_revision = max((du.revision(rs) for rs in old), default=0) + 1
        _, stamp = self._now()
        if existing is not None:
            changed = du.set_new_rs_annotations(d, existing, new_revision, exists=True)
            if changed or existing.spec.min_ready_seconds != d.spec.min_ready_seconds:
                existing.spec.min_ready_seconds = d.spec.min_ready_seconds
                existing.CopyFrom(await self.ctx.client.update(existing))
            status_changed = False
            if du.has_progress_deadline(d) and du.get_condition(d.status, du.PROGRESSING) is None:
                du.set_condition(d.status, du.new_condition(du.PROGRESSING, "True", du.FOUND_NEW_RS,
                                                            f'Found new replica set "{existing.metadata.name}"', stamp))
                status_changed = True
            await self._sync_revision(d, du.revision(existing), status_changed)
            return existing
        if not create:
            return None
        return await self._create_new_rs(d, old, new_revision, stamp)

    def _new_rs(self, d: Deployment, old: list[RS], new_revision: int) -> RS:
        collision = d.status.collision_count if d.status.HasField("collision_count") else None
        pod_hash = du.template_hash(d.spec.template, collision)
        rs = RS(api_version="apps/v1", kind="ReplicaSet")
        rs.metadata.name = f"{d.metadata.name}-{pod_hash}"
        rs.metadata.namespace = d.metadata.namespace
        rs.metadata.owner_references.append(controller_ref(d))
        rs.spec.template.CopyFrom(d.spec.template)
        rs.spec.template.metadata.labels[du.POD_TEMPLATE_HASH] = pod_hash
        rs.metadata.labels.update(rs.spec.template.metadata.labels)
        rs.spec.selector.CopyFrom(d.spec.selector)
        rs.spec.selector.match_labels[du.POD_TEMPLATE_HASH] = pod_hash
        rs.spec.min_ready_seconds = d.spec.min_ready_seconds
        rs.spec.replicas = 0
        rs.spec.replicas = du.new_rs_new_replicas(d, [*old, rs], rs)
        du.set_new_rs_annotations(d, rs, new_revision, exists=False)
        return rs

    async def _create_new_rs(self, d: Deployment, old: list[RS], new_revision: int, stamp: str) -> RS:
        rs = self._new_rs(d, old, new_revision)
        try:
            created = await self.ctx.client.create(rs, d.metadata.namespace)
        except AlreadyExistsError:
            found: Any = await self.ctx.client.get("replicasets", rs.metadata.name, d.metadata.namespace)
            ref = get_controller_of(found)
            if ref is not None and ref.uid == d.metadata.uid and du.equal_ignore_hash(found.spec.template,
                                                                                       d.spec.template):
                return found  # ours, the cache had not seen it yet
            d.status.collision_count = (d.status.collision_count if d.status.HasField("collision_count") else 0) + 1
            await self._write_status(d)
            raise AlreadyExistsError(grpc.StatusCode.ALREADY_EXISTS, f'replica set "{rs.metadata.name}" exists with another template: '
                                 "hash collision, trying again with a new collision count") from None
        except ApiStatusError as err:
            if du.has_progress_deadline(d):
                du.set_condition(d.status, du.new_condition(du.PROGRESSING, "False", du.FAILED_RS_CREATE,
                                                            f'Failed to create new replica set "{rs.metadata.name}": '
                                                            f"{err}", stamp))
                await self._write_status(d)
            raise
        if created.spec.replicas > 0:
            await self.recorder.event(d, "Normal", "ScalingReplicaSet",
                                      f"Scaled up replica set {created.metadata.name} from 0 to {created.spec.replicas}")
        if du.has_progress_deadline(d):
            du.set_condition(d.status, du.new_condition(du.PROGRESSING, "True", du.NEW_RS_CREATED,
                                                        f'Created new replica set "{created.metadata.name}"', stamp))
        await self._sync_revision(d, new_revision, du.has_progress_deadline(d))
        return created

    async def _sync_revision(self, d: Deployment, rev: int, status_changed: bool) -> None:
        if status_changed:
            await self._write_status(d)
        if d.metadata.annotations.get(du.REVISION) != str(rev):
            d.metadata.annotations[du.REVISION] = str(rev)
            patch = {"metadata": {"annotations": {du.REVISION: str(rev)}}}
            out = await self.ctx.client.patch("deployments", d.metadata.name, patch, d.metadata.namespace)
            d.metadata.resource_version = out.metadata.resource_version  # type: ignore[attr-defined]

    async def _write_status(self, d: Deployment) -> None:
        out = await self.ctx.client.update_status(d)
        d.metadata.resource_version = out.metadata.resource_version

    # ---- scaling -----------------------------------------------------------------------------

    async def scale_rs(self, rs: RS, size: int, d: Deployment) -> bool:
        """Set rs's size (and the Deployment-size annotations); True when the size changed."""
        before = rs.spec.replicas
        annotations = du.set_replicas_annotations(rs, du.replicas(d), du.replicas(d) + du.max_surge(d))
        if before == size and not annotations:
            return False
        rs.spec.replicas = size
        rs.CopyFrom(await self.ctx.client.update(rs))
        if before != size:
            way = "up" if size > before else "down"
            await self.recorder.event(d, "Normal", "ScalingReplicaSet",
                                      f"Scaled {way} replica set {rs.metadata.name} from {before} to {size}")
        return before != size

    async def is_scaling_event(self, d: Deployment, rss: list[RS]) -> bool:
        new_rs, old = await self.get_all(d, rss, create=False)
        for rs in du.active([*old, new_rs]):
            desired = du.int_annotation(rs, du.DESIRED_REPLICAS)
            if desired is not None and desired != du.replicas(d):
                return True
        return False

    async def scale(self, d: Deployment, new_rs: RS | None, old: list[RS]) -> None:
        """Kubernetes' scale(): resize the Deployment's ReplicaSets without rolling."""
        only = du.find_active_or_latest(new_rs, old)
        if only is not None:
            await self.scale_rs(only, du.replicas(d), d)
            return
        if du.is_saturated(d, new_rs):
            for rs in du.active(old):
                await self.scale_rs(rs, 0, d)
            return
        if du.is_rolling(d):
            everything = [rs for rs in [*old, new_rs] if rs is not None]
            sizes = du.proportional_sizes(d, everything)
            for rs in du.active(everything):
                await self.scale_rs(rs, sizes[rs.metadata.name], d)

    async def sync_scale(self, d: Deployment, rss: list[RS]) -> None:
        new_rs, old = await self.get_all(d, rss, create=False)
        await self.scale(d, new_rs, old)
        if d.spec.paused:
            await self.cleanup(d, old)
        await self.sync_deployment_status([*old, new_rs], new_rs, d)

    # ---- strategies --------------------------------------------------------------------------

    async def rollout_rolling(self, d: Deployment, rss: list[RS]) -> None:
        new_rs, old = await self.get_all(d, rss, create=True)
        assert new_rs is not None
        everything: list[RS | None] = [*old, new_rs]
        if not await self.reconcile_new(d, everything, new_rs):
            if not await self.reconcile_old(d, everything, du.active(old), new_rs):
                if du.deployment_complete(d, d.status):
                    await self.cleanup(d, old)
        await self.sync_rollout_status(everything, new_rs, d)

    async def reconcile_new(self, d: Deployment, everything: Sequence[RS | None], new_rs: RS) -> bool:
        want = du.replicas(d)
        if new_rs.spec.replicas == want:
            return False
        if new_rs.spec.replicas > want:
            return await self.scale_rs(new_rs, want, d)
        return await self.scale_rs(new_rs, du.new_rs_new_replicas(d, everything, new_rs), d)

    async def reconcile_old(self, d: Deployment, everything: Sequence[RS | None], old: list[RS], new_rs: RS) -> bool:
        if du.spec_total(old) == 0:
            return False
        min_available = du.replicas(d) - du.max_unavailable(d)
        new_unavailable = new_rs.spec.replicas - du.settled_available_total([new_rs])
        max_scaled_down = du.spec_total(everything) - min_available - new_unavailable
        if max_scaled_down <= 0:
            return False
        cleaned = await self._cleanup_unhealthy(d, old, max_scaled_down)
        scaled = await self._scale_down_old(d, [*old, new_rs], old)
        return cleaned + scaled > 0

    async def _cleanup_unhealthy(self, d: Deployment, old: list[RS], budget: int) -> int:
        """Scale old ReplicaSets down by their unavailable pods first: they serve nobody."""
        total = 0
        for rs in du.by_creation(old):
            if total >= budget:
                break
            if rs.spec.replicas == 0 or rs.status.available_replicas == rs.spec.replicas:
                continue
            cut = min(budget - total, rs.spec.replicas - rs.status.available_replicas)
            if cut > 0:
                await self.scale_rs(rs, rs.spec.replicas - cut, d)
                total += cut
        return total

    async def _scale_down_old(self, d: Deployment, everything: Sequence[RS | None], old: list[RS]) -> int:
        min_available = du.replicas(d) - du.max_unavailable(d)
        available = du.settled_available_total(everything)
        if available <= min_available:
            return 0
        budget, total = available - min_available, 0
        for rs in du.by_creation(old):
            if total >= budget:
                break
            if rs.spec.replicas == 0:
                continue
            cut = min(rs.spec.replicas, budget - total)
            await self.scale_rs(rs, rs.spec.replicas - cut, d)
            total += cut
        return total

    async def rollout_recreate(self, d: Deployment, rss: list[RS]) -> None:
        new_rs, old = await self.get_all(d, rss, create=False)
        scaled = False
        for rs in du.active(old):
            scaled = await self.scale_rs(rs, 0, d) or scaled
        if scaled or self._old_pods_running(old):
            await self.sync_rollout_status([*old, new_rs], new_rs, d)
            return
        if new_rs is None:
            new_rs, old = await self.get_all(d, rss, create=True)
            assert new_rs is not None
        await self.scale_rs(new_rs, du.replicas(d), d)
        if du.deployment_complete(d, d.status):
            await self.cleanup(d, old)
        await self.sync_rollout_status([*old, new_rs], new_rs, d)

    def _old_pods_running(self, old: list[RS]) -> bool:
        if du.status_total(old) > 0:
            return True
        for rs in old:
            for pod in self.pods.by_index(OWNER_INDEX, rs.metadata.uid):
                assert isinstance(pod, core_pb2.Pod)
                if pod.status.phase not in ("Failed", "Succeeded"):
                    return True
        return False

    # ---- history -----------------------------------------------------------------------------

    async def cleanup(self, d: Deployment, old: list[RS]) -> None:
        """Delete old, empty ReplicaSets beyond revisionHistoryLimit, lowest revision first."""
        if not d.spec.HasField("revision_history_limit"):
            return
        alive = [rs for rs in old if not rs.metadata.deletion_timestamp]
        excess = len(alive) - d.spec.revision_history_limit
        for rs in du.by_revision(alive)[:max(excess, 0)]:
            if (rs.status.replicas or rs.spec.replicas
                    or rs.metadata.generation > rs.status.observed_generation):
                continue
            try:
                await self.ctx.client.delete("replicasets", rs.metadata.name, rs.metadata.namespace,
                                             uid=rs.metadata.uid)
            except NotFoundError:
                pass

    # ---- status ------------------------------------------------------------------------------

    async def sync_status_only(self, d: Deployment, rss: list[RS]) -> None:
        new_rs, old = await self.get_all(d, rss, create=False)
        await self.sync_deployment_status([*old, new_rs], new_rs, d)

    async def sync_deployment_status(self, everything: Sequence[RS | None], new_rs: RS | None,
                                     d: Deployment) -> None:
        _, stamp = self._now()
        status = du.calculate_status(everything, new_rs, d, stamp)
        if status != d.status:
            d.status.CopyFrom(status)
            await self._write_status(d)

    async def check_paused_conditions(self, d: Deployment) -> None:
        if du.paused_condition(d, self._now()[1]):
            await self._write_status(d)

    async def sync_rollout_status(self, everything: Sequence[RS | None], new_rs: RS | None, d: Deployment) -> None:
        now, stamp = self._now()
        status = du.calculate_status(everything, new_rs, d, stamp)
        du.progress_condition(d, new_rs, status, now, stamp)
        failures = [c for rs in everything if rs is not None for c in rs.status.conditions
                    if c.type == du.REPLICA_FAILURE and c.status == "True"]
        if failures:
            du.set_condition(status, du.new_condition(du.REPLICA_FAILURE, "True", failures[0].reason,
                                                      failures[0].message, stamp))
        else:
            du.remove_condition(status, du.REPLICA_FAILURE)
        if status != d.status:
            d.status.CopyFrom(status)
            await self._write_status(d)
        self._requeue_stuck(d, status, now)

    def _requeue_stuck(self, d: Deployment, status: apps_pb2.DeploymentStatus, now: float) -> None:
        """Come back when the progress deadline would pass, to mark the rollout timed out."""
        cond = du.get_condition(status, du.PROGRESSING)
        if not du.has_progress_deadline(d) or cond is None or cond.status != "True":
            return
        if du.deployment_complete(d, status):
            return
        try:
            since = parse_time(cond.last_update_time)
        except ValueError:
            return
        after = since + d.spec.progress_deadline_seconds - now
        self.queue.add_after(object_key(d), max(after + 1.0, 1.0))


CONTROLLERS: tuple[type[Controller], ...] = (DeploymentController,)
