"""The console script's exit: what it printed and what atexit handlers do survive skipping the teardown."""

import subprocess
import sys
import textwrap


def _run(body: str, tmp_path) -> subprocess.CompletedProcess:
    script = textwrap.dedent(f"""
        import atexit, pathlib, sys, threading, time
        from snapshot_pipeline.cli.process_exit import exit_now
        marker = pathlib.Path({str(tmp_path)!r})
        atexit.register(lambda: (marker / "atexit").write_text("ran"))
    """) + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)


def test_buffered_output_and_atexit_handlers_survive_and_the_code_is_kept(tmp_path):
    done = _run("""
        sys.stdout.write("x" * 1_000_000 + "\\n")
        print("last line", file=sys.stderr, end="")
        exit_now(3)
    """, tmp_path)
    assert done.returncode == 3
    assert done.stdout == "x" * 1_000_000 + "\n"
    assert done.stderr == "last line"
    assert (tmp_path / "atexit").read_text() == "ran"


def test_a_running_non_daemon_thread_is_waited_for(tmp_path):
    done = _run("""
        def late():
            time.sleep(0.5)
            (marker / "thread").write_text("finished")
        threading.Thread(target=late).start()
        exit_now(0)
    """, tmp_path)
    assert done.returncode == 0
    assert (tmp_path / "thread").read_text() == "finished"
    assert (tmp_path / "atexit").read_text() == "ran"
