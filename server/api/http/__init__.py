"""The HTTP/JSON API: what AdminService and QueryService do, over HTTPS with the same bearer tokens and roles,
served by uvicorn on the gRPC server's event loop (`server`). `app` assembles the FastAPI application from
one router per group (people, unknown faces and snapshots, events and fleet, models and rollouts, devices,
audit); `problems` turns errors into RFC 9457 problem details; `auth` checks tokens; `audited` records
changes in the admin audit log; `uploads` reads request bodies within their size limits."""
