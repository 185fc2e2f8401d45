"""One module per GitHub event; `ROUTERS` lists them, `router()` composes them (used by bot.__main__)."""
from __future__ import annotations

from gidgethub import routing

from handlers import check_run, check_suite, issue_comment, merge_group, pull_request, pull_request_review, push

ROUTERS = (push.router, pull_request.router, pull_request_review.router, issue_comment.router, check_run.router,
           merge_group.router, check_suite.router)


def router() -> routing.Router:
    return routing.Router(*ROUTERS)
