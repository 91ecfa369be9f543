"""Configuration files of the loopback topology's PgBouncer and nginx (filled in by
scripts/cluster_topology.py; docker-compose.yml carries the same settings)."""

PGBOUNCER_INI = """\
; PgBouncer in front of both servers: the app's primary and its read replica.
[databases]
{database} = host=127.0.0.1 port={primary} dbname={database}
{database}_replica = host=127.0.0.1 port={replica} dbname={database}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = hba
auth_hba_file = {folder}/hba.conf
auth_file = {folder}/userlist.txt
admin_users = postgres
stats_users = postgres
; Transaction pooling: a server connection is held only for a transaction. Session state does
; not survive (SET, session advisory locks, prepared statements: see CITIZEN_LOOKUP_DB_POOLER).
pool_mode = transaction
; Server connections per database and user; PostgreSQL's max_connections (100) holds both
; databases' pools and reserves (2 x 25) with room for the superuser and replication.
default_pool_size = 20
reserve_pool_size = 5
reserve_pool_timeout = 1
max_client_conn = 1000
; A server that refuses connections (the replica stopped) makes a query wait this long in the
; queue before it fails (PgBouncer 1.18 does not fail it at once); 120 s by default. Also the
; longest a query waits for a free server connection under load.
query_wait_timeout = 3
server_connect_timeout = 2
server_login_retry = 1
ignore_startup_parameters = extra_float_digits
log_connections = 0
log_disconnections = 0
logfile = {folder}/pgbouncer.log
pidfile = {folder}/pgbouncer.pid
"""

NGINX_CONF = """\
# nginx in front of the web nodes, as docs/scaling.md step 2 describes.
{user}
worker_processes 1;
daemon off;
pid {folder}/nginx.pid;
lock_file {folder}/nginx.lock;
events {{ worker_connections 1024; }}

http {{
    # The path only: providers may put a number and a message in the query string.
    log_format citizen '$remote_addr [$time_local] "$request_method $uri" $status '
                       '$body_bytes_sent $request_time $upstream_addr';
    access_log {folder}/access.log citizen;
    client_body_temp_path {folder}/tmp/client_body;
    proxy_temp_path {folder}/tmp/proxy;
    fastcgi_temp_path {folder}/tmp/fastcgi;
    uwsgi_temp_path {folder}/tmp/uwsgi;
    scgi_temp_path {folder}/tmp/scgi;

    # Slow clients stay here: a request reaches gunicorn only once read whole.
    client_header_timeout 10s;
    client_body_timeout 10s;
    send_timeout 10s;
    keepalive_timeout 15s;
    # Above the app's 16 KiB, so the app answers an oversized body with its own 413.
    client_max_body_size 64k;
    client_body_buffer_size 64k;
    limit_conn_zone $binary_remote_addr zone=per_client:10m;

    upstream web {{
{upstreams}
        keepalive 32;
        # Below gunicorn's keepalive (2 s): nginx drops an idle connection before gunicorn
        # does, never sending a request down one that gunicorn is closing (a reset, a 502).
        keepalive_timeout 1s;
    }}

    server {{
        listen 127.0.0.1:{port};
        limit_conn per_client 200;

        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $http_host;
        # Appended to what the client sent: the app (TRUSTED_PROXIES=1) takes the last.
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header X-Forwarded-Host $http_host;
        proxy_request_buffering on;
        proxy_buffering on;
        proxy_connect_timeout 1s;
        proxy_read_timeout 15s;
        proxy_next_upstream_tries 2;

        location / {{
            proxy_pass http://web;
            # A node that refuses or drops the connection: the request goes to the other.
            # SMS and delivery-report webhooks are idempotent (a provider's message id is
            # stored once), so a POST that a dying node may have stored is passed on too.
            proxy_next_upstream error timeout non_idempotent;
        }}

        # A USSD step moves its session on: one that a dying node may have applied is not
        # sent again (the gateway's own retry decides); a refused connection still moves on.
        location ~ ^/webhooks/[^/]+/ussd$ {{
            proxy_pass http://web;
            proxy_next_upstream error timeout;
        }}
    }}
}}
"""
