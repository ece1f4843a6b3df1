"""csrc/native.c on its own (tests/core/elf_check.c): every allocator function of a full-RELRO
object, an object loaded later by path, one found by a bare name through the caller's RUNPATH and
by $ORIGIN, a lazily bound RTLD_DEEPBIND one, dlclose, uninstall and a second install. Natively,
again under AddressSanitizer and UBSan (without the loader features its runtime changes), and
cross-compiled for AArch64 (with branch protection: BTI landing pads) under qemu-user. Then two
things a process may do around a pass: load an object on another thread while the drainer polls
(the pass must not touch it before the loader is done), and bring an allocator of its own that
lazy binding, not memscope, must pick for an entry not bound yet."""
import os
import shutil
import subprocess

import pytest

from nativeprobe import HERE, ROOT, build_probe, compiler


def build_check(tmp_path, cc, extra=()):
    exe = tmp_path / "elf_check"
    subprocess.run([cc, "-std=c11", "-Wall", "-Wextra", "-Werror", "-O1", "-g", "-D_GNU_SOURCE", f"-I{ROOT / 'csrc'}",
                    *extra, "-o", str(exe), str(HERE / "elf_check.c"), str(ROOT / "csrc" / "native.c"),
                    "-ldl", "-pthread"], check=True, capture_output=True, text=True)
    return exe


def run_plain(args, runner=()):
    """Runs a check program outside the sanitizer runtime scripts/sanitize.sh preloads into Python
    (which refuses RTLD_DEEPBIND); the sanitized variant links its runtime itself."""
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    return subprocess.run([*runner, *map(str, args)], capture_output=True, text=True, timeout=300, env=env)


def run_check(tmp_path, cc, runner=(), extra=(), checks=21):
    hidden = tmp_path / "hidden"
    first = build_probe(tmp_path / "libfirst.so", cc, ["-Wl,-z,relro,-z,now", f"-Wl,-rpath,{hidden}",
                                                       "-Wl,--enable-new-dtags"])
    later = build_probe(tmp_path / "liblater.so", cc)
    build_probe(hidden / "libbare.so", cc)
    lazy = build_probe(tmp_path / "liblazy.so", cc, ["-Wl,-z,lazy", "-Wl,-z,norelro"])
    exe = build_check(tmp_path, cc, extra)
    proc = run_plain([exe, first, later, "libbare.so", lazy], runner)
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
                                   "-DLAZY_FLAGS=(RTLD_LAZY|RTLD_LOCAL)", "-DNO_BARE_NAME"], checks=18)


def test_native_patching_aarch64_under_qemu(tmp_path):
    cross, qemu = shutil.which("aarch64-linux-gnu-gcc"), shutil.which("qemu-aarch64") or shutil.which("qemu-aarch64-static")
    sysroot = "/usr/aarch64-linux-gnu"
    if cross is None or qemu is None or not os.path.isdir(sysroot):
        if os.environ.get("MEMSCOPE_REQUIRE_NEON") == "1":
            pytest.fail("MEMSCOPE_REQUIRE_NEON=1 but gcc-aarch64-linux-gnu or qemu-user is missing")
        pytest.skip("needs gcc-aarch64-linux-gnu and qemu-user (Debian packages) to run the AArch64 patching")
    # Built with BTI landing pads: memscope's dlopen entry is reached by an indirect branch.
    run_check(tmp_path, cross, runner=[qemu, "-cpu", "max", "-L", sysroot], extra=["-mbranch-protection=standard"])


def shared(cc, target, source, flags=()):
    target.parent.mkdir(parents=True, exist_ok=True)
    c = target.with_suffix(".c")
    c.write_text(source)
    # (flags after the source: the linker drops a -l library it has not seen used yet)
    subprocess.run([cc, "-std=c11", "-O1", "-fPIC", "-shared", "-o", str(target), str(c), *flags],
                   check=True, capture_output=True, text=True)
    return target


def test_object_loaded_while_the_drainer_polls(tmp_path):
    """An object without PLT entries (-fno-plt -z now, as Rust builds), full RELRO and thousands
    of relocations, loaded and unloaded 400 times by another thread while passes run: the
    loader lists it before relocating it, and a pass that wrote its GOT then (making the page
    read-only behind the loader) crashed the process inside ld.so."""
    cc = compiler()
    if cc is None:
        pytest.skip("no C compiler")
    n = 3000
    syms = shared(cc, tmp_path / "libsyms.so", "".join(f"void s{i}(void){{}}\n" for i in range(n)))
    calls = "".join(f"case {i}: s{i}(); break;" for i in range(n))
    big = shared(cc, tmp_path / "libbig.so",
                 "#include <stdlib.h>\n" + "".join(f"void s{i}(void);\n" for i in range(n))
                 + "void *big_alloc(size_t n) { return malloc(n); }\nvoid big_free(void *p) { free(p); }\n"
                 + f"void big_call(int k) {{ switch (k) {{ {calls} }} }}\n",
                 ["-fno-plt", "-Wl,-z,now,-z,relro", f"-L{tmp_path}", "-lsyms", f"-Wl,-rpath,{tmp_path}"])
    assert syms.exists()
    proc = run_plain([build_check(tmp_path, cc), "race", big])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("ok: 400 loads"), proc.stdout


@pytest.mark.skipif(not hasattr(os, "RTLD_DEEPBIND"), reason="RTLD_DEEPBIND")
def test_entry_not_bound_yet_is_left_to_the_loader(tmp_path):
    """An object loaded lazily with RTLD_DEEPBIND whose dependency is an allocator of its own:
    its malloc entry bound (to that allocator) before install, its free entry not yet. Lazy
    binding would pick the same allocator for free; memscope must not pick libc's instead (the
    allocator traps on a block it did not make)."""
    cc = compiler()
    if cc is None:
        pytest.skip("no C compiler")
    shared(cc, tmp_path / "libmyalloc.so", r"""
#include <stddef.h>
#include <string.h>
extern void *__libc_malloc(size_t);
extern void __libc_free(void *);
void *malloc(size_t n) { char *p = __libc_malloc(n + 16); if (!p) return 0; memcpy(p, "MYALLOC!", 8); return p + 16; }
void free(void *q) { if (!q) return; char *p = (char *)q - 16; if (memcmp(p, "MYALLOC!", 8)) __builtin_trap(); __libc_free(p); }
void *calloc(size_t a, size_t b) { void *p = malloc(a * b); if (p) memset(p, 0, a * b); return p; }
void *realloc(void *q, size_t n) { void *p = malloc(n); if (q && p) { memcpy(p, q, n); free(q); } return p; }
""")
    user = shared(cc, tmp_path / "libuser.so", r"""
#include <stdlib.h>
void *user_malloc(size_t n) { void *volatile p = malloc(n); return p; }
void user_free(void *p) { free(p); }
""", [f"-L{tmp_path}", "-lmyalloc", f"-Wl,-rpath,{tmp_path}", "-Wl,-z,lazy"])
    proc = run_plain([build_check(tmp_path, cc), "own-allocator", user])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 7 and all(line.startswith("ok: ") for line in lines), proc.stdout
