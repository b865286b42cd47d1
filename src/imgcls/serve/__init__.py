"""`imgcls serve`: a trained model as a web page and a JSON API (FastAPI on uvicorn).

from imgcls.serve import create_app      # an ASGI app for one run folder
from imgcls.serve import run_server      # what `imgcls serve RUN` calls
"""

from imgcls.serve.app import ServeSettings, create_app, run_server

__all__ = ["ServeSettings", "create_app", "run_server"]
