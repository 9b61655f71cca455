# Voila settings of the app that need Python (read by `make app` /
# python -m mesimp_lib.viz.appserver through --Voila.config_file_paths=app).
from mesimp_lib.viz.appserver import set_xsrf_cookie

c = get_config()  # noqa: F821 - defined by traitlets when it reads this file
# Voila's page shuts its kernel down on `beforeunload` with a POST that carries the _xsrf
# cookie; Voila 0.5.13 never sets that cookie, so the POST got a 403 and closed tabs left
# their kernels running. The hook sets it when a page starts its kernel.
c.VoilaConfiguration.prelaunch_hook = set_xsrf_cookie
