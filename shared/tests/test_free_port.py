"""testing.free_port: the ports a process is given are all different, so a stack's services never share one."""

from __future__ import annotations

import socket

from kredit_shared.testing import free_port


def test_a_process_is_never_given_the_same_port_twice():
    # The kernel may hand out a port again once its socket closes: among 2,000 plain picks a few repeat.
    ports = [free_port() for _ in range(2000)]
    assert len(set(ports)) == len(ports)


def test_the_port_given_is_free():
    with socket.socket() as s:
        s.bind(("127.0.0.1", free_port()))  # raises if taken
