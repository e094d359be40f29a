"""``harvester run``: the long-running process. ``run`` starts and stops everything; one ``lanes``
entry per account holds its poll ``worker``, its discovery and its gate; the ``wakeup`` listener
hears new jobs, ``health`` serves /healthz and /metrics (``metrics``), ``sd_notify`` speaks to
systemd."""
