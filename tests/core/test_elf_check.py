"""csrc/native.c on its own (tests/core/elf_check.c): every allocator function of a full-RELRO
object, an object loaded later by path, one found by a bare name through the caller's RUNPATH,
a lazily bound RTLD_DEEPBIND one, dlclose, uninstall and a second install. Natively, again under
AddressSanitizer and UBSan (without the two loader features its runtime changes), and
cross-compiled for AArch64 under qemu-user."""
import os
import shutil
import subprocess

import pytest

from nativeprobe import HERE, ROOT, build_probe, compiler


def run_check(tmp_path, cc, runner=(), extra=(), checks=19):
    hidden = tmp_path / "hidden"
    first = build_probe(tmp_path / "libfirst.so", cc, ["-Wl,-z,relro,-z,now", f"-Wl,-rpath,{hidden}",
                                                       "-Wl,--enable-new-dtags"])
    later = build_probe(tmp_path / "liblater.so", cc)
    build_probe(hidden / "libbare.so", cc)
    lazy = build_probe(tmp_path / "liblazy.so", cc, ["-Wl,-z,lazy", "-Wl,-z,norelro"])
    exe = tmp_path / "elf_check"
    subprocess.run([cc, "-std=c11", "-Wall", "-Wextra", "-Werror", "-O1", "-g", "-D_GNU_SOURCE", f"-I{ROOT / 'csrc'}",
                    *extra, "-o", str(exe), str(HERE / "elf_check.c"), str(ROOT / "csrc" / "native.c"),
                    "-ldl", "-pthread"], check=True, capture_output=True, text=True)
    # Its own program: not the sanitizer runtime that scripts/sanitize.sh preloads into Python
    # (which refuses RTLD_DEEPBIND); the sanitized variant links its runtime itself.
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    proc = subprocess.run([*runner, str(exe), str(first), str(later), "libbare.so", str(lazy)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == checks and all(line.startswith("ok: ") for line in lines), proc.stdout


def test_native_patching(tmp_path):
    cc = compiler()
    if cc is None:
        pytest.skip("no C compiler")
    run_check(tmp_path, cc)


def test_native_patching_under_sanitizers(tmp_path):
    cc = compiler()
    if cc is None:
        pytest.skip("no C compiler")
    # (the sanitizer runtime refuses RTLD_DEEPBIND)
    run_check(tmp_path, cc, extra=["-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                                   "-DLAZY_FLAGS=(RTLD_LAZY|RTLD_LOCAL)", "-DNO_BARE_NAME"], checks=17)


def test_native_patching_aarch64_under_qemu(tmp_path):
    cross, qemu = shutil.which("aarch64-linux-gnu-gcc"), shutil.which("qemu-aarch64") or shutil.which("qemu-aarch64-static")
    sysroot = "/usr/aarch64-linux-gnu"
    if cross is None or qemu is None or not os.path.isdir(sysroot):
        if os.environ.get("MEMSCOPE_REQUIRE_NEON") == "1":
            pytest.fail("MEMSCOPE_REQUIRE_NEON=1 but gcc-aarch64-linux-gnu or qemu-user is missing")
        pytest.skip("needs gcc-aarch64-linux-gnu and qemu-user (Debian packages) to run the AArch64 patching")
    run_check(tmp_path, cross, runner=[qemu, "-L", sysroot])
