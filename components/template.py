"""The Debian container template on the node's storage, downloaded by PVE itself from a URL."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pulumi
from pulumi_proxmoxve import download as pve_download

from bluegreen.model.resources import TEMPLATE_COMPONENT_TYPE
from bluegreen.model.topology import Topology

TEMPLATE_TYPE = TEMPLATE_COMPONENT_TYPE


@dataclass(frozen=True)
class ContainerTemplateArgs:
    node: str
    storage: str
    file: str
    url: str
    checksum: str | None = None
    checksum_algorithm: str | None = None

    @classmethod
    def from_topology(cls, topology: Topology) -> ContainerTemplateArgs | None:
        """None when the stack gives no URL: the template is then assumed present on the node."""
        tpl = topology.proxmox.template
        if not tpl.url:
            return None
        return cls(node=topology.proxmox.node, storage=tpl.storage, file=tpl.file, url=tpl.url,
                   checksum=tpl.checksum, checksum_algorithm=tpl.checksum_algorithm)

    @property
    def file_id(self) -> str:
        return f"{self.storage}:vztmpl/{self.file}"


def needs_download(topology: Topology, created: Iterable[int] | None = None) -> bool:
    """Download only when a URL is given and some container will be created from it (`created`:
    their vmids; by default those not `existing`): adopting an estate must not touch the node's storage."""
    vmids = list(created) if created is not None else [c.vmid for c in topology.containers if not c.existing]
    return bool(topology.proxmox.template.url) and bool(vmids)


def download_file_args(args: ContainerTemplateArgs) -> pve_download.FileArgs:
    return pve_download.FileArgs(
        content_type="vztmpl",
        node_name=args.node,
        datastore_id=args.storage,
        url=args.url,
        # The name the stack declares, not the URL's last segment: containers refer to it by name.
        file_name=args.file,
        checksum=args.checksum,
        checksum_algorithm=args.checksum_algorithm,
        # A pinned template never changes upstream: no re-download because a mirror's size differs.
        overwrite=False,
        # The file is often there already (the adopted containers were built from it); taking it
        # over beats failing the whole `up` with "file already exists".
        overwrite_unmanaged=True,
    )


class ContainerTemplate(pulumi.ComponentResource):
    """Its `file_id` output is PVE's volume id of the template (`local:vztmpl/<file>`); using it
    as a container's template makes that container wait for the download."""

    download: pve_download.File
    file_id: pulumi.Output[str]

    def __init__(self, name: str, args: ContainerTemplateArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(TEMPLATE_TYPE, name, None, opts)
        self.args = args
        self.download = pve_download.File(name, download_file_args(args),
                                          opts=pulumi.ResourceOptions(parent=self))
        self.file_id = self.download.id
        self.register_outputs({"file_id": self.file_id, "url": args.url})
