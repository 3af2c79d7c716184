"""The lab: a real multi-host RKE-style etcd cluster on one Linux machine (`etcd-dr lab ...`).

Each host is a network namespace with its own PID, mount and UTS namespaces, copy-on-write system
dirs on disk (they survive a simulated power loss), a tmpfs /run, its own sshd and dockerd. A bridge
connects the hosts. Modules: config (names, addresses, the state file), net (bridge, namespaces,
veths), hosts (boot, power, cleanup of what an aborted lab left), console (an Executor through
nsenter), images (etcd image from the machine's binaries), members (certificates and etcd members),
lifecycle (up/down/power), rehearsal/ (`etcd-dr rehearse`: a disaster and its recovery played on
the lab, measured). The lab is a user of the core; the core does not import it. Its command,
`etcd-dr lab ...`, is etcd_dr/cli/lab.py.
"""
