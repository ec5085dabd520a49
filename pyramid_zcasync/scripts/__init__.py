"""Console entry points: ``pzcasync-zeo`` (the ZEO server of production.ini)."""
