#!/bin/sh
# The deployment script of the in-place environment `ci-legacy`: what this team ran on its
# long-lived servers before Phoenix, and still runs there (branch by abstraction). Phoenix
# runs it once per server, after taking the server out of its load balancer, and then
# applies the boot configuration, restarts the server, gates it and puts it back.
#   PHOENIX_IMAGE           the new build's files (the baked image)
#   PHOENIX_SERVER_ROOT     the server's own files, updated here where they stand
#   PHOENIX_SERVER_ID, PHOENIX_SERVER_ADDRESS, PHOENIX_ROLE, PHOENIX_ENV
set -eu
echo "deploy.sh: $PHOENIX_SERVER_ID ($PHOENIX_ROLE in $PHOENIX_ENV) to $(cat "$PHOENIX_IMAGE/VERSION")"
# Ship the code: the application and its version. Other files on the server stay as they are.
cp -R "$PHOENIX_IMAGE/app" "$PHOENIX_SERVER_ROOT/"
cp "$PHOENIX_IMAGE/VERSION" "$PHOENIX_SERVER_ROOT/VERSION"
"$PHOENIX_SERVER_ROOT/venv/bin/python" -m py_compile "$PHOENIX_SERVER_ROOT/app/server.py"
