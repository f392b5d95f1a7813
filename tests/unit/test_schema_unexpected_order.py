"""Which unexpected argument QEMU names when there are several: the first slot of GLib's
GHashTable (qobject_input_check_struct()), after the keys went in in QDict order and the
declared members were taken out. The expected names were answered by a real QEMU 7.2
(GLib 2.74) for these exact argument sets — `query-status` (no members) and `pmemsave`
(val, size, filename declared) — including tables big enough to resize."""

from __future__ import annotations

import pytest

from sevd.commands.schema import Schema

# (argument names in the order sent, the name QEMU 7.2 reported)
QEMU_ANSWERS = [
    (["emubc-", "ls"], "emubc-"),
    (["q", "bcnn", "hc"], "bcnn"),
    (["b-sdhuu", "s", "bhbr_ej", "erdsjr-", "dss"], "s"),
    (["ldrw", "sb", "pvrn", "osoljh", "wyh", "sj", "kxojtcdq"], "sb"),
    (["fykepnb", "yr", "kwltps", "c-cipwvc", "x", "usv-o", "wmvla", "lftdpbgy"], "usv-o"),
    (["exhmm", "cfomrie-", "_riwnlv", "hecfehv", "ap-s", "ija", "nrl", "ew_qtu", "o"], "o"),
    (
        ["mmmdpum", "g", "go", "dkt", "d", "s", "rdl", "c", "tmeu", "ltlpd", "_p", "ppjcedxk"],
        "mmmdpum",
    ),
    (
        [
            "p-wfq",
            "g",
            "ewrayq",
            "u_cw_",
            "qlfly",
            "rryq",
            "uhtzzy",
            "zh-m",
            "gqpl",
            "a",
            "pigwt",
            "ozxllc",
            "dhpg",
            "gptt-a",
            "ulzuc-vd",
            "zwygpfn",
            "czxmom",
        ],
        "zwygpfn",
    ),
    (
        [
            "xf",
            "eae",
            "zuet-tpv",
            "erreaa",
            "qx",
            "n_g",
            "aigj",
            "yski",
            "-ebxlov",
            "-qereqq",
            "_",
            "yftayzef",
            "ptx",
            "rb",
            "vqqrpz",
            "giby",
            "qo",
            "y",
            "ok",
            "wioq",
            "qhwqirg-",
            "endmokcv",
            "ncgv",
            "zdyew",
        ],
        "zdyew",
    ),
    (
        [
            "eieohx",
            "mp",
            "v-h",
            "wnq",
            "knglkcx",
            "akroow",
            "m",
            "qtjqcd",
            "dcii",
            "y",
            "iye",
            "_v-imer",
            "wkcibzwf",
            "ciauczi",
            "t_",
            "ci_d",
            "akrniteb",
            "dfib",
            "gju",
            "qygjo",
            "ilz",
            "i",
            "a",
            "x",
            "qpho",
            "v-",
            "vpr-mqj",
            "hkg-",
            "mlb",
            "acu",
            "nfbcv",
            "_qvjthw",
            "boffi",
            "ailkrkhb",
            "glfak",
            "cpiqugh",
            "c",
            "-cems",
            "j",
        ],
        "x",
    ),
    (["val", "size", "filename", "uhc"], "uhc"),
    (["val", "size", "filename", "qyevw", "mykxp"], "mykxp"),
    (["val", "size", "filename", "jx", "uebwq", "nxwzqe", "yqsza"], "uebwq"),
    (["val", "size", "filename", "szwvwu", "ca", "e", "ldmorb", "aurvhp", "aoz"], "ca"),
    (
        [
            "val",
            "size",
            "filename",
            "x",
            "rcvqc",
            "xpizci",
            "xy",
            "hx",
            "opmcpv",
            "ybt",
            "ugctek",
            "uxw",
            "tse",
        ],
        "hx",
    ),
    (
        [
            "val",
            "size",
            "filename",
            "p",
            "vdw",
            "vp",
            "wqj",
            "ooyd",
            "gjcpa",
            "ocq",
            "imgg",
            "s",
            "e",
            "qiletu",
            "idwlh",
            "pmaf",
            "omjxen",
            "mkd",
            "aky",
            "mdg",
            "axjilc",
        ],
        "ocq",
    ),
]

_DECLARED = {"val", "size", "filename"}


@pytest.mark.parametrize(("keys", "named"), QEMU_ANSWERS)
def test_first_unexpected_argument_is_qemus(keys: list[str], named: str) -> None:
    schema = Schema()
    command = "pmemsave" if set(keys) >= _DECLARED else "query-status"
    args = {k: (0 if k in _DECLARED and command == "pmemsave" else 1) for k in keys}
    if command == "pmemsave":
        args["filename"] = "x"
    cmd = schema.commands[command]
    assert not cmd.validator.is_valid(args)
    assert schema.explain(cmd, args) == f"Parameter '{named}' is unexpected"
