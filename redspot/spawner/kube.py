"""RedspotKubeSpawner: one pod per user on EKS, on a node of the chosen instance type.

Built on KubeSpawner, fed by the same profile and group rules as the local spawner
(``profiles.py``) and the same storage layout (``storage.py``):

- ``profile_list`` is a callable: each user sees only the profiles their groups allow,
  each one a KubeSpawner profile (node selector on the instance type, guarantees and
  limits that leave the node its share, ``nvidia.com/gpu`` and its toleration);
- ``load_user_options()`` validates the request against the same rules (a clear 400
  naming the allowed profiles) before KubeSpawner applies the chosen profile;
- home, ``shared/public``, ``shared/<group>`` and read-only data sets are mounted from
  EFS, either from one ReadWriteMany claim or through per-user access points, and what
  others shared with the user read-only under ``~/shared-with-me`` (``share_mounts``);
- pods run as a non-root uid with no privilege escalation, every capability dropped,
  the runtime's default seccomp profile and no service-account token.
"""

from __future__ import annotations

from kubespawner import KubeSpawner
from traitlets import Bool, Dict, Enum, Float, Integer, List, Unicode, default, validate

from .. import __version__
from ..compute.kuberay import RayClusterSpec, WorkerGroup, ray_cluster_name, ray_nodes
from .base import RedspotSpawnerMixin
from .profiles import NodeOverhead, ProfileError, kubespawner_profile, parse_size
from .storage import STORAGE_MODES, Dataset, KubeStorage, Layout, kube_volumes, share_mounts

DEFAULT_IMAGE = f"redspot/singleuser:{__version__}"


class RedspotKubeSpawner(RedspotSpawnerMixin, KubeSpawner):
    # --- images (until the environments service picks them) -----------------------------
    images = Dict(
        value_trait=Unicode(),
        config=True,
        help="""Images users may choose, by name: ``{"cpu": "…/singleuser:1.0",
        "gpu": "…/singleuser-gpu:1.0"}``. The first is the default. With more than one,
        the spawn form offers them and ``user_options`` may name one as ``image``.
        Default: ``{"default": "redspot/singleuser:<version>"}``.""",
    )

    @default("images")
    def _images_default(self):
        return {"default": DEFAULT_IMAGE}

    @validate("images")
    def _check_images(self, proposal):
        if not proposal.value:
            raise ValueError("images: at least one image is needed")
        return proposal.value

    # --- placement ----------------------------------------------------------------------
    extra_node_selector = Dict(
        value_trait=Unicode(),
        config=True,
        help="""Labels every user pod's node must carry, on top of the instance type, e.g.
        ``{"karpenter.sh/capacity-type": "on-demand"}``. Profiles add their own
        ``node_labels``.""",
    )
    max_pods_per_node = Integer(
        110, config=True,
        help="Pods a node is sized for; EKS keeps 11 MiB of memory per pod. Default 110.",
    )
    memory_capacity_fraction = Float(
        0.95, config=True,
        help="Share of an instance's nominal memory its kernel leaves to Kubernetes. 0.95.",
    )
    daemonset_cpu = Float(
        0.2, config=True, help="CPUs left on each node for its daemonsets. Default 0.2.",
    )
    daemonset_memory = Unicode(
        "512Mi", config=True, help="Memory left on each node for its daemonsets. 512Mi.",
    )

    # --- storage ------------------------------------------------------------------------
    storage_mode = Enum(
        list(STORAGE_MODES), default_value="shared-pvc", config=True,
        help="""``shared-pvc`` (default): homes are ``home/<user>`` folders of
        ``storage_claim``. ``access-points``: each home is a PVC of its own from
        ``home_storage_class`` (an EFS StorageClass with ``provisioningMode: efs-ap``).""",
    )
    storage_claim = Unicode(
        "redspot-efs", config=True,
        help="The ReadWriteMany PVC holding home/ (shared-pvc mode) and shared/.",
    )
    home_storage_class = Unicode(
        "efs-ap", config=True, help="StorageClass of per-user homes (access-points mode).",
    )
    home_size = Unicode(
        "10Gi", config=True, help="Requested size of a per-user home PVC (EFS ignores it).",
    )
    datasets = List(
        Dict(), config=True,
        help="""Read-only data sets mounted into every server:
        ``[{"name": "imagenet", "claim": "datasets", "mount_path": "/data/imagenet",
        "sub_path": "imagenet"}]``.""",
    )

    # --- the user's Ray cluster (KubeRay) ------------------------------------------------
    ray_cluster = Bool(
        True, config=True,
        help="""Give each user a RayCluster (KubeRay) while their server runs: made when
        the server starts, deleted when it stops; ``%ray_connect`` joins it. Needs the
        KubeRay operator and RBAC on ``rayclusters.ray.io`` and ``secrets``.""",
    )
    ray_head_profile = Unicode(
        "m5.xlarge", config=True, help="The instance profile of users' Ray heads.",
    )
    ray_max_workers = Integer(
        2, config=True,
        help="""Most workers of each profile a user's RayCluster scales out to (each
        profile the user may use is a worker group, scaled from 0).""",
    )

    # --- KubeSpawner defaults Redspot changes -------------------------------------------
    @default("profile_list")
    def _profile_list_default(self):
        return type(self).kube_profile_list

    @default("image")
    def _image_default(self):
        return next(iter(self.images.values()))

    @default("uid")
    def _uid_default(self):
        return 1000

    @default("gid")
    def _gid_default(self):
        return 100

    @default("fs_gid")
    def _fs_gid_default(self):
        return 100

    @default("allow_privilege_escalation")
    def _ape_default(self):
        return False

    @default("container_security_context")
    def _csc_default(self):
        return {"capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True}

    @default("pod_security_context")
    def _psc_default(self):
        return {
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
            "fsGroupChangePolicy": "OnRootMismatch",
        }

    @default("automount_service_account_token")
    def _no_token(self):
        return False

    @default("default_url")
    def _default_url(self):
        return "/lab"

    @default("start_timeout")
    def _start_timeout_default(self):
        # a GPU node may have to be started for the pod first
        return 900

    # --- profiles -----------------------------------------------------------------------

    @property
    def node_overhead(self) -> NodeOverhead:
        return NodeOverhead(
            max_pods=self.max_pods_per_node,
            memory_capacity=self.memory_capacity_fraction,
            daemonset_cpu=self.daemonset_cpu,
            daemonset_memory=parse_size(self.daemonset_memory),
        )

    def kube_profile_list(self) -> list[dict]:
        """The KubeSpawner profiles of the instance profiles this user may use."""
        allowed = self.allowed_profiles()
        names = [p.name for p in allowed]
        default_name = self.default_profile if self.default_profile in names else (
            names[0] if names else None)
        return [
            kubespawner_profile(p, p.name == default_name, self.node_overhead,
                                self.extra_node_selector)
            for p in allowed
        ]

    def user_option_keys(self) -> dict[str, str]:
        keys = super().user_option_keys()
        keys["image"] = f"one of the images: {', '.join(self.images)}"
        return keys

    def apply_environment(self, environment: dict | None) -> None:
        """Pods in an environment run its image (built by the buildah or Kubernetes builder);
        others the default image (or the one the ``image`` option names)."""
        self.image = environment["location"] if environment else next(iter(self.images.values()))

    def apply_options(self, options: dict, ready: list[dict] = ()) -> None:
        super().apply_options(options, ready)
        name = options.get("image")
        if name is not None and self.redspot_environment:
            raise ProfileError("choose an environment or an image, not both")
        if name is not None:
            if name not in self.images:
                raise ProfileError(
                    f"image {name!r} is not available; choose one of: {', '.join(self.images)}"
                )
            self.image = self.images[name]

    def apply_profile(self, profile) -> None:
        # resources, placement and GPUs come from the KubeSpawner profile, applied by
        # KubeSpawner.load_user_options from kube_profile_list
        self.profile = profile

    def render_image_choices(self) -> list[str]:
        return list(self.images) if len(self.images) > 1 else []

    async def load_user_options(self):
        """Validate the request with Redspot's rules, then let KubeSpawner apply it."""
        await self._apply_user_options(self.user_options)
        await super().load_user_options()
        self._apply_storage()
        await self._apply_shares()

    # --- shares: read-only mounts of what others shared with this user --------------------

    async def fetch_shares(self) -> list[dict]:
        """What is shared with this user now, asked of the sharing service (none when it
        is off). A service that does not answer starts the server without them."""
        url = self.service_urls.get("sharing")
        if not url or not self.services_token:
            return []
        from urllib.parse import quote

        try:
            answer = await self.ask_service(
                "sharing", f"api/shares?recipient={quote(self.user.name, safe='')}")
        except Exception as e:  # noqa: BLE001 - a server without its shares, and why
            self.log.warning("%s's server starts without the files shared with them: the "
                             "sharing service did not answer (%s)", self.user.name, e)
            return []
        return answer["shares"]

    async def _apply_shares(self) -> None:
        shares = await self.fetch_shares()
        if not shares:
            return
        volumes, mounts = share_mounts(shares, self.kube_storage)
        self.volumes = [*self.volumes, *volumes]
        self.volume_mounts = [*self.volume_mounts, *mounts]
        self.log.info("%s's server mounts %d shares read-only", self.user.name, len(mounts))

    # --- storage ------------------------------------------------------------------------

    @property
    def kube_storage(self) -> KubeStorage:
        return KubeStorage(
            mode=self.storage_mode,
            claim=self.storage_claim,
            home_storage_class=self.home_storage_class,
            home_size=self.home_size,
            datasets=tuple(Dataset(**d) for d in self.datasets),
        )

    @property
    def layout(self) -> Layout:
        return Layout(self.user.name, groups=tuple(g.name for g in self.user.groups))

    _operator_volumes = None

    def _apply_storage(self) -> None:
        if self._operator_volumes is None:
            self._operator_volumes = (list(self.volumes), list(self.volume_mounts))
        storage = self.kube_storage
        volumes, mounts = kube_volumes(self.layout, storage)
        self.volumes = [*volumes, *self._operator_volumes[0]]
        self.volume_mounts = [*mounts, *self._operator_volumes[1]]
        home_claim = storage.home_claim(self.layout)
        if home_claim:
            self.storage_pvc_ensure = True
            self.pvc_name = home_claim
            self.storage_class = storage.home_storage_class
            self.storage_capacity = storage.home_size
            self.storage_access_modes = ["ReadWriteMany"]
        else:
            self.storage_pvc_ensure = False

    # --- Ray ------------------------------------------------------------------------------

    def ray_cluster_spec(self) -> RayClusterSpec:
        """The user's RayCluster: the server's image, a head on ``ray_head_profile``, a
        worker group per profile the user may use, their folders mounted."""
        head = self.catalog.get(self.ray_head_profile)
        if head is None:
            raise ProfileError(f"ray_head_profile {self.ray_head_profile!r} is not in the "
                               f"catalog; choose one of: {', '.join(self.catalog)}")
        return RayClusterSpec(
            user=self.user.name, namespace=self.namespace, image=self.image, head=head,
            workers=tuple(WorkerGroup(p, 0, self.ray_max_workers)
                          for p in self.allowed_profiles()),
            groups=self.layout.groups, storage=self.kube_storage,
            overhead=self.node_overhead, node_selector=dict(self.extra_node_selector),
            # 0 is "never" for Redspot; KubeRay would remove idle workers at once
            idle_timeout_seconds=self.ray_idle_timeout or 7 * 24 * 3600,
        )

    def _ray_clusters(self):
        from ..kubernetes import RayClusters

        return RayClusters(self.api.api_client)

    async def start(self):
        """The token's Secret first (the pod reads it), then the pod (KubeSpawner, which
        loads the user's options), then the RayCluster, in the image and groups the
        options chose. A cluster that cannot be made leaves the server running, with
        the reason in the hub's log; ``%ray_connect`` then says it finds no cluster."""
        if self.ray_cluster:
            await self._ray_clusters().token(self.ray_cluster_spec())
        url = await super().start()
        if self.ray_cluster:
            try:
                await self._ray_clusters().ensure(self.ray_cluster_spec())
            except Exception:
                self.log.exception("Could not make the RayCluster of %s", self.user.name)
        return url

    async def poll(self):
        """The server's state; while it runs, the usage log is told which Ray nodes of
        the user's cluster run (its pods, each labelled with its profile)."""
        status = await super().poll()
        if status is None and self.ray_cluster and self.usage_log is not None:
            try:
                pods = await self.api.list_namespaced_pod(
                    self.namespace,
                    label_selector=f"ray.io/cluster={ray_cluster_name(self.user.name)}")
                pods = self.api.api_client.sanitize_for_serialization(pods)["items"]
            except Exception as e:  # noqa: BLE001 - the server runs on; said in the log
                self.log.warning("Could not list the Ray nodes of %s for the usage log: %s",
                                 self.user.name, e)
            else:
                self.note_usage("ray", ray_nodes(pods, self.catalog))
        return status

    async def stop(self, now=False):
        await super().stop(now=now)
        if self.ray_cluster:
            try:
                await self._ray_clusters().delete(self.ray_cluster_spec())
            except Exception:
                self.log.exception("Could not delete the RayCluster of %s", self.user.name)

    # --- environment --------------------------------------------------------------------

    def get_env(self):
        env = super().get_env()
        env.update(self.redspot_env())
        env["REDSPOT_NAMESPACE"] = self.namespace
        env["REDSPOT_STORAGE_MODE"] = self.storage_mode
        env["REDSPOT_IMAGE"] = self.image  # lineage of what is registered from here
        if self.ray_cluster:
            name = ray_cluster_name(self.user.name)
            env["REDSPOT_RAY_CLUSTER"] = name
            env["RAY_AUTH_MODE"] = "token"
            env["RAY_AUTH_TOKEN"] = {"valueFrom": {"secretKeyRef": {
                "name": f"{name}-token", "key": "token"}}}
        return env
