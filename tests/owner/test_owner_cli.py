"""The owner's sevctl verbs: file names and modes, and virtee's published outputs.

Expected outputs are those of virtee/sevctl tests/measurementbuild.rs and
tests/secretbuild.rs (v0.6.2 argument names), run through ``add_owner_commands``.
"""

from __future__ import annotations

import base64
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from owner_sim import SimPlatform

from sevd.formats.attestation import AttestationReport
from sevd.formats.crypto import ecdh_z
from sevd.formats.measure import launch_measure_mac
from sevd.formats.ovmf import launch_digest
from sevd.formats.secret import SecretHeader, open_secret, parse_secret_table
from sevd.formats.session import SessionBlob, open_session
from sevd.formats.sevcert import SevCert

Run = Callable[..., int]
FIRMWARE = "virtee-sevctl/OVMF.amdsev.fd_trimmed_edk2-ovmf-20220126gitbb1bba3d77-4.el9"


# -- session -------------------------------------------------------------------------------


def test_session_writes_virtee_files(
    sevctl: Run, platform: SimPlatform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pdh.cert").write_bytes(platform.chain.pdh.to_bytes())
    assert sevctl("session", "pdh.cert", "1") == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["pdh.cert", "vm_godh.b64", "vm_session.b64", "vm_tek.bin", "vm_tik.bin"]
    for key in ("vm_tek.bin", "vm_tik.bin"):
        assert stat.S_IMODE((tmp_path / key).stat().st_mode) == 0o600
        assert len((tmp_path / key).read_bytes()) == 16
    # The platform (firmware side) opens the session with the owner's GODH.
    godh = SevCert.from_bytes(base64.b64decode((tmp_path / "vm_godh.b64").read_text()))
    blob = SessionBlob.from_bytes(base64.b64decode((tmp_path / "vm_session.b64").read_text()))
    tek, tik = open_session(ecdh_z(platform.pdh_key, godh.public_key), blob, 1)
    assert (tek, tik) == (
        (tmp_path / "vm_tek.bin").read_bytes(),
        (tmp_path / "vm_tik.bin").read_bytes(),
    )


def test_session_name_and_hex_policy(
    sevctl: Run, platform: SimPlatform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pdh.cert").write_bytes(platform.chain.pdh.to_bytes())
    assert sevctl("session", "--name", "guest7", "pdh.cert", "0x00170005") == 0
    assert (tmp_path / "guest7_session.b64").exists()
    godh = SevCert.from_bytes(base64.b64decode((tmp_path / "guest7_godh.b64").read_text()))
    blob = SessionBlob.from_bytes(base64.b64decode((tmp_path / "guest7_session.b64").read_text()))
    open_session(ecdh_z(platform.pdh_key, godh.public_key), blob, 0x00170005)


def test_session_errors(
    sevctl: Run, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pek = str(data_dir / "virtee-sev/rome/pek.cert")
    assert sevctl("session", pek, "1") == 1
    assert "not a PDH certificate" in capsys.readouterr().err
    assert sevctl("session", str(tmp_path / "missing"), "1") == 1
    assert sevctl("session", str(data_dir / "virtee-sev/rome/pdh.cert"), "one") == 1
    assert "policy=one value must be int or hex" in capsys.readouterr().err


# -- measurement build ---------------------------------------------------------------------


def _std(data_dir: Path) -> list[str]:
    # virtee/sevctl tests/measurementbuild.rs stdargs
    return [
        "measurement", "build", "--api-major", "0x01", "--api-minor", "40", "--build-id", "40",
        "--policy", "0x03", "--tik", str(data_dir / "virtee-sevctl/measurement/tik1.bin"),
        "--nonce", "wxP6tRHCFrFQWxsuqZA8QA==",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            ["--launch-digest", "xkvRAfyaSizgonxAjZIAkR8TmolUabBKQKb6KJCDDSM="],
            "lswbxWxI9gckya16JQvdFtpYmNO4b+3inAPpqsgoBI7DE/q1EcIWsVBbGy6pkDxA",
        ),
        (
            ["--firmware", FIRMWARE],
            "oMDewIouJSpbpNRHj7Mk3p08H2dPZQdsZMU14qIymBnDE/q1EcIWsVBbGy6pkDxA",
        ),
        (
            [
                "--firmware", FIRMWARE,
                "--kernel", "virtee-sevctl/measurement/vmlinuz-fake",
                "--initrd", "virtee-sevctl/measurement/initrd-fake",
                "--cmdline", "foo bar baz fake kernel=cmdline",
            ],
            "h3auYbWQnVW7EGLWN4Hf9SN0oEYMPU2sK4bLnefWPwvDE/q1EcIWsVBbGy6pkDxA",
        ),
    ],
)  # fmt: skip
def test_measurement_build_vectors(
    sevctl: Run,
    data_dir: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    expected: str,
) -> None:
    args = [str(data_dir / a) if a.startswith("virtee-") else a for a in extra]
    assert sevctl(*_std(data_dir), *args) == 0
    assert capsys.readouterr().out == expected + "\n"


def test_measurement_build_outfile(
    sevctl: Run, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "measure.bin"
    digest = ["--launch-digest", "xkvRAfyaSizgonxAjZIAkR8TmolUabBKQKb6KJCDDSM="]
    assert sevctl(*_std(data_dir), *digest, "--outfile", str(out)) == 0
    assert capsys.readouterr().out == f"Wrote outfile: {out}\n"
    assert base64.b64encode(out.read_bytes()).decode() == (
        "lswbxWxI9gckya16JQvdFtpYmNO4b+3inAPpqsgoBI7DE/q1EcIWsVBbGy6pkDxA"
    )


def test_measurement_build_seves_vector(
    sevctl: Run, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # "Test SEV-ES VMSA bits": the nonce comes from --launch-measure-blob.
    expected = "/o0nzDKE5XgtVnUZWPhUea/WZYrTKLExR7KCwuMdbActvpWfXTFk21KMZIAAhQny"
    assert sevctl(
        "measurement", "build", "--api-major", "1", "--api-minor", "49", "--build-id", "6",
        "--policy", "0x05", "--tik", str(data_dir / "virtee-sevctl/measurement/tik1.bin"),
        "--launch-measure-blob", expected, "--firmware", str(data_dir / FIRMWARE),
        "--num-cpus", "4", "--vmsa-cpu0", str(data_dir / "virtee-sevctl/vmsa0.bin"),
        "--vmsa-cpu1", str(data_dir / "virtee-sevctl/vmsa1.bin"),
    ) == 0  # fmt: skip
    assert capsys.readouterr().out == expected + "\n"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "One of --firmware or --launch-digest must be specified."),
        (["--firmware", FIRMWARE, "--policy", "5"], "CPU/VMSA info must be specified"),
        (["--launch-digest", "!!"], "failed to base64 decode --launch-digest"),
        (["--launch-digest", "AAAA", "--api-major", "256"], "must decode to 32 bytes"),
        (["--firmware", FIRMWARE, "--initrd", FIRMWARE], "need --kernel"),
    ],
)
def test_measurement_build_errors(
    sevctl: Run,
    data_dir: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    args = [str(data_dir / a) if a.startswith("virtee-") else a for a in extra]
    assert sevctl(*_std(data_dir), *args) == 1
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ""


def test_measurement_build_requires_a_nonce(
    sevctl: Run, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    digest = "xkvRAfyaSizgonxAjZIAkR8TmolUabBKQKb6KJCDDSM="
    args = [*_std(data_dir)[:-2], "--launch-digest", digest]
    assert sevctl(*args) == 1
    assert "One of --nonce or --launch-measure-blob must be specified." in capsys.readouterr().err


# -- secret build --------------------------------------------------------------------------

SECRET_BLOB = "TLeA7607lZQntLjRY1/i+sbtdSZ+75zxpz4Px9hzpBLwItF5Q2o4prA++3ZZv9ZS"


def _secret(data_dir: Path, tmp_path: Path, *secrets: str, iv: bool = True) -> list[str]:
    args = [
        "secret", "build",
        "--tik", str(data_dir / "virtee-sevctl/secret/tik1.bin"),
        "--tek", str(data_dir / "virtee-sevctl/secret/tek1.bin"),
        "--launch-measure-blob", SECRET_BLOB,
    ]  # fmt: skip
    for s in secrets:
        guid, name = s.split(":")
        args += ["--secret", f"{guid}:{data_dir / 'virtee-sevctl/secret' / name}"]
    if iv:
        args += ["--iv", "rFR07U3TLH2YnsUj2SVZ7A=="]
    return [*args, str(tmp_path / "header"), str(tmp_path / "payload")]


def _outputs(tmp_path: Path) -> str:
    # The format virtee's test compares (tests/secretbuild.rs `test_build`).
    header = base64.b64encode((tmp_path / "header").read_bytes()).decode()
    payload = base64.b64encode((tmp_path / "payload").read_bytes()).decode()
    return f"header_file:\n{header}\npayload_file:\n{payload}\n"


def test_secret_build_vector(
    sevctl: Run, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        sevctl(*_secret(data_dir, tmp_path, "736869e5-84f0-4973-92ec-06879ce3da0b:secret1.txt"))
        == 0
    )
    assert capsys.readouterr().out == (
        f"Wrote header to: {tmp_path / 'header'}\nWrote payload to: {tmp_path / 'payload'}\n"
    )
    assert _outputs(tmp_path) == (
        "header_file:\nAAAAAKxUdO1N0yx9mJ7FI9klWey8FSzeYQ4X8K71VzNKLU/KQsIsQxLjtbhaPUewqshX5Q==\n"
        "payload_file:\n0U3e5PcXv0UW+H4tSBFKOdCYfKE1+j38Bc2fuO16mYiyI+sWx7INfn+lgYj56GL12yyinDa+"
        "lVfCCwD/2w5cPA==\n"
    )


def test_secret_build_multi_vector(sevctl: Run, data_dir: Path, tmp_path: Path) -> None:
    assert (
        sevctl(
            *_secret(
                data_dir,
                tmp_path,
                "736869e5-84f0-4973-92ec-06879ce3da0b:secret1.txt",
                "736869e5-aaaa-4973-92ec-06879ce3da0b:secret2.txt",
            )
        )
        == 0
    )
    assert _outputs(tmp_path) == (
        "header_file:\nAAAAAKxUdO1N0yx9mJ7FI9klWeyZ3r0dOEKHUOhIRqzGYYvTJgdMtBPL1nK6GD9aGET7Ng==\n"
        "payload_file:\n0U3e5PcXv0UW+H4tSBFKObWYfKE1+j38Bc2fuO16mYiyI+sWx7INfn+lgYj56GL12yyinDa+"
        "lVfCC+WWs332lpLNUX1ZI3YK7vYgtys4X+uGxEIlkIQ90v8/w8ZFmQMe\n"
    )


def test_secret_build_random_iv(sevctl: Run, data_dir: Path, tmp_path: Path) -> None:
    # "Ensure random IV generates different result".
    guid = "736869e5-84f0-4973-92ec-06879ce3da0b:secret1.txt"
    assert sevctl(*_secret(data_dir, tmp_path, guid, iv=False)) == 0
    first = _outputs(tmp_path)
    assert sevctl(*_secret(data_dir, tmp_path, guid, iv=False)) == 0
    assert _outputs(tmp_path) != first


def test_secret_build_errors(
    sevctl: Run, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _secret(data_dir, tmp_path)
    assert sevctl(*args[:-2], "--secret", "no-colon", *args[-2:]) == 1
    assert "Unexpected --secret format" in capsys.readouterr().err
    assert sevctl(*args[:-2], "--secret", "not-a-uuid:/dev/null", *args[-2:]) == 1
    assert "failed to parse string as UUID: not-a-uuid" in capsys.readouterr().err


# -- verify --------------------------------------------------------------------------------


def test_verify_real_rome_chain(
    sevctl: Run, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = sevctl(
        "verify", "--sev", str(data_dir / "virtee-sev/rome"),
        "--ca", str(data_dir / "virtee-sev/builtin/rome"),
    )  # fmt: skip
    out = capsys.readouterr().out.split("\n")
    assert rc == 0
    assert [line.split(" ")[0:4] for line in out[:1]] == [["PDH", "EP384", "D256", out[0][15:]]]
    assert out[1].startswith(" ⬑ PEK EP384 E256 ")
    assert out[2].startswith("   •⬑ OCA EP384 E256 ")
    assert out[3].startswith("    ⬑ CEK EP384 E256 ")
    assert out[4].startswith("       ⬑ ASK R4096 R384 ")
    assert out[5].startswith("         •⬑ ARK R4096 R384 ")
    assert out[6:] == [
        "",
        " • = self signed, ⬑ = signs, •̷ = invalid self sign, ⬑̸ = invalid signs",
        "",
    ]


def test_verify_bad_link_exits_nonzero(
    sevctl: Run, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = sevctl(
        "verify", "--sev", str(data_dir / "virtee-sev/naples"),
        "--ca", str(data_dir / "virtee-sev/builtin/rome"),
    )  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 1
    assert "       ⬑̸ ASK R4096 R384 " in captured.out
    assert "SEV/CA certificate verification failed (ASK → CEK" in captured.err


def test_verify_full_chain_file_quiet_and_oca(
    sevctl: Run,
    platform: SimPlatform,
    data_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "chain.cert").write_bytes(platform.full_chain())
    assert sevctl("verify", "-q", "--sev", str(tmp_path / "chain.cert")) == 0
    assert capsys.readouterr().out == ""
    # --oca replaces the chain's OCA: a foreign OCA does not sign this PEK.
    rc = sevctl(
        "verify", "--sev", str(tmp_path / "chain.cert"),
        "--oca", str(data_dir / "virtee-sev/rome/oca.cert"),
    )  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 1 and "   •⬑̸ OCA" in captured.out and "OCA → PEK" in captured.err


def test_verify_without_sources(sevctl: Run, capsys: pytest.CaptureFixture[str]) -> None:
    assert sevctl("verify") == 1
    assert "no --sev given" in capsys.readouterr().err


def test_verify_chain_without_ca(
    sevctl: Run, platform: SimPlatform, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "chain.cert").write_bytes(platform.chain.to_bytes())
    assert sevctl("verify", "--sev", str(tmp_path / "chain.cert")) == 1
    assert "no AMD CA chain" in capsys.readouterr().err


# -- validate ------------------------------------------------------------------------------


def test_validate(
    sevctl: Run, platform: SimPlatform, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mnonce, ld = b"m" * 16, b"d" * 32
    report = AttestationReport.create(platform.pek_key, mnonce, ld, 0x1).to_bytes()
    (tmp_path / "chain.cert").write_bytes(platform.chain.to_bytes())
    (tmp_path / "report.bin").write_bytes(report)
    (tmp_path / "pek.cert").write_bytes(platform.chain.pek.to_bytes())
    chain, rep = str(tmp_path / "chain.cert"), str(tmp_path / "report.bin")
    assert sevctl("validate", chain, rep) == 0
    assert capsys.readouterr().out == ""  # silent on success, as virtee's sevctl
    assert sevctl("validate", str(tmp_path / "pek.cert"), rep) == 0
    b64 = base64.b64encode
    assert sevctl("validate", "--mnonce", b64(mnonce).decode(), "--launch-digest",
                  b64(ld).decode(), "--policy", "1", chain, rep) == 0  # fmt: skip
    assert sevctl("validate", "--mnonce", b64(bytes(16)).decode(), chain, rep) == 1
    assert "mnonce" in capsys.readouterr().err
    (tmp_path / "report.bin").write_bytes(report[:-1])
    assert sevctl("validate", chain, rep) == 1
    assert "Unexpected report size" in capsys.readouterr().err


# -- the whole owner flow against the simulated platform -----------------------------------


def test_owner_flow_end_to_end(
    sevctl: Run,
    platform: SimPlatform,
    data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "chain.cert").write_bytes(platform.full_chain())
    (tmp_path / "pdh.cert").write_bytes(platform.chain.pdh.to_bytes())
    policy = 0x1
    assert sevctl("verify", "-q", "--sev", "chain.cert") == 0
    assert sevctl("session", "--name", "g", "pdh.cert", str(policy)) == 0

    # Firmware: LAUNCH_START, LAUNCH_UPDATE_DATA(firmware), LAUNCH_MEASURE.
    godh = SevCert.from_bytes(base64.b64decode(Path("g_godh.b64").read_text()))
    blob = SessionBlob.from_bytes(base64.b64decode(Path("g_session.b64").read_text()))
    tek, tik = open_session(ecdh_z(platform.pdh_key, godh.public_key), blob, policy)
    firmware = (data_dir / FIRMWARE).read_bytes()
    mnonce = b"\x42" * 16
    measure = launch_measure_mac(tik, 1, 51, 3, policy, launch_digest(firmware), mnonce)
    measurement_b64 = base64.b64encode(measure + mnonce).decode()

    # Owner: the expected measurement equals the firmware's.
    capsys.readouterr()
    assert sevctl(
        "measurement", "build", "--api-major", "1", "--api-minor", "51", "--build-id", "3",
        "--policy", str(policy), "--tik", "g_tik.bin", "--launch-measure-blob", measurement_b64,
        "--firmware", str(data_dir / FIRMWARE),
    ) == 0  # fmt: skip
    assert capsys.readouterr().out.strip() == measurement_b64

    # Owner: the secret; firmware: LAUNCH_SECRET opens it.
    Path("luks.txt").write_bytes(b"correct horse battery staple")
    guid = "736869e5-84f0-4973-92ec-06879ce3da0b"
    assert sevctl(
        "secret", "build", "--tik", "g_tik.bin", "--tek", "g_tek.bin",
        "--launch-measure-blob", measurement_b64, "--secret", f"{guid}:luks.txt", "hdr", "payload",
    ) == 0  # fmt: skip
    header = SecretHeader.from_bytes(Path("hdr").read_bytes())
    plaintext = open_secret(tek, tik, header, Path("payload").read_bytes(), measure)
    assert list(parse_secret_table(plaintext).values()) == [b"correct horse battery staple"]
