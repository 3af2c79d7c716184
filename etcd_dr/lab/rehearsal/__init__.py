"""The rehearsal (`etcd-dr rehearse`, etcd_dr.lab.rehearsal.run): modules writer (the data set and the writer
thread with its log), measure (RPO and RTO from the log; pure), scenarios (which hosts are lost and
how, through the fault core), report (the verdict, JSON and markdown)."""
