"""How zoo.shard reads Ray Client's join failures (the real joins are in
tests/models/unetpp/test_unetpp_sharding.py): which ones are the per-driver server's death at start-up,
joined again, and the one line a failure leaves."""
from __future__ import annotations

from zoo.shard import _transient_join_failure, ray_message

# What the head's client proxy sends back when the driver's server exits between the proxy's poll()
# and its psutil read (the shape seen in CI, the proxy's traceback with newlines).
_RACE = ("Initialization failure from server:\nTraceback (most recent call last):\n"
         '  File "/x/ray/util/client/server/proxier.py", line 765, in Datapath\n'
         "    if not self.proxy_manager.start_specific_server(\n"
         "           ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n"
         '  File "/x/ray/util/client/server/proxier.py", line 396, in start_specific_server\n'
         "    cmd = psutil_proc.cmdline()\n"
         "psutil.ZombieProcess: PID still exists but it's a zombie (pid=4242)\n")
_RETURNED_FALSE = ("Initialization failure from server:\nTraceback (most recent call last):\n"
                   "RuntimeError: Starting Ray client server failed. See ray_client_server_23001.err for "
                   "detailed logs.\n")


def test_the_servers_death_in_either_shape_is_joined_again():
    assert _transient_join_failure(ConnectionAbortedError(_RACE))
    assert _transient_join_failure(ConnectionAbortedError(_RETURNED_FALSE))


def test_other_failures_are_not_retried():
    assert not _transient_join_failure(ConnectionError("ray client connection timeout"))
    assert not _transient_join_failure(RuntimeError("Version mismatch: The cluster was started with Ray 2.59"))


def test_a_server_traceback_leaves_its_exception_line_not_its_first_frame():
    line = ray_message(ConnectionAbortedError(_RACE))
    assert line == ("Initialization failure from server: "
                    "psutil.ZombieProcess: PID still exists but it's a zombie (pid=4242)")
    assert ray_message(ValueError("plain\nmessage")) == "plain message"
    assert ray_message(ValueError("")) == "ValueError"
