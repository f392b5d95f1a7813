"""QOM introspection for the types sevd models: qom-list-types, qom-list-properties.

Management stacks detect SEV support by probing QOM: libvirt sets QEMU_CAPS_SEV_GUEST when
`qom-list-types` lists `sev-guest`, and kernel-hashes support from its properties. The
table below is QEMU 9.2's for these types (target/i386/sev.c, qom/object.c), plus the 2016
RFC's `security-policy` object that sevd implements.
"""

from __future__ import annotations

from typing import Any

from sevd.commands.registry import GUEST, Ctx, command
from sevd.domain.errors import DomainError

# name -> (parent, abstract, properties: [(name, type, description)])
_TYPES: dict[str, tuple[str | None, bool, list[tuple[str, str, str]]]] = {
    "object": (None, True, [("type", "string", "")]),
    "confidential-guest-support": ("object", True, []),
    "x86-confidential-guest": ("confidential-guest-support", True, []),
    "sev-common": ("x86-confidential-guest", True, [
        ("sev-device", "string", "SEV device to use"),
        ("cbitpos", "uint32", "C-bit location in page table entry"),
        ("reduced-phys-bits", "uint32",
         "number of bits in physical addresses that become unavailable when SEV is enabled"),
        ("kernel-hashes", "bool", "add kernel hashes to guest firmware for measured Linux "
         "boot"),
    ]),
    "sev-guest": ("sev-common", False, [
        ("dh-cert-file", "string", "guest owners DH certificate (encoded with base64)"),
        ("session-file", "string", "guest owners session parameters (encoded with base64)"),
        ("policy", "uint32", "guest policy"),
        ("handle", "uint32", "SEV firmware handle"),
        ("legacy-vm-type", "OnOffAuto", "use legacy VM type to maintain measurement "
         "compatibility with older QEMU or kernel versions."),
    ]),
    "security-policy": ("object", False, [
        ("debug", "bool", "Set on/off if debugging is allowed on this guest"),
    ]),
}


def _ancestors(name: str) -> list[str]:
    out = []
    cur: str | None = name
    while cur is not None:
        out.append(cur)
        cur = _TYPES[cur][0]
    return out


@command("qom-list-types", GUEST)
def qom_list_types(ctx: Ctx, args: dict[str, Any]) -> list[dict[str, Any]]:
    implements = args.get("implements")
    abstract = args.get("abstract", False)
    out: list[dict[str, Any]] = []
    if implements is not None and implements not in _TYPES:
        return out  # QEMU lists nothing for an unknown interface
    for name, (parent, is_abstract, _) in _TYPES.items():
        if is_abstract and not abstract:
            continue
        if implements is not None and implements not in _ancestors(name):
            continue
        info: dict[str, Any] = {"name": name}
        if is_abstract:
            info["abstract"] = True
        if parent is not None:
            info["parent"] = parent
        out.append(info)
    return out


@command("qom-list-properties", GUEST)
def qom_list_properties(ctx: Ctx, args: dict[str, Any]) -> list[dict[str, Any]]:
    typename = args["typename"]
    if typename not in _TYPES:
        raise DomainError(f"Class '{typename}' not found")
    out: list[dict[str, Any]] = []
    for t in reversed(_ancestors(typename)):
        for name, ptype, desc in _TYPES[t][2]:
            prop: dict[str, Any] = {"name": name, "type": ptype}
            if desc:
                prop["description"] = desc
            out.append(prop)
    return out
