"""GET /v1/agents/{agent_id}."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from sqlalchemy import select

from marketplace.api.deps import SessionDep
from marketplace.api.errors import not_found
from marketplace.indexer.models import AgentMetadataRow, AgentRow
from marketplace.protocol.wire import AgentIdentity

router = APIRouter(prefix="/v1/agents", tags=["agents"])


@router.get("/{agent_id}", response_model=AgentIdentity, operation_id="getAgent")
def get_agent(agent_id: Annotated[int, Path(ge=1, le=2**63 - 1)], session: SessionDep) -> AgentIdentity:
    """An agent's owner, registration URI, wallet and metadata (values hex-encoded)."""
    row = session.get(AgentRow, agent_id)
    if row is None:
        raise not_found("agent", agent_id)
    metadata = session.scalars(select(AgentMetadataRow).where(AgentMetadataRow.agent_id == agent_id))
    # Sorted here, not in SQL: engines (and their collations) order text differently.
    return AgentIdentity(agent_id=row.agent_id, owner=row.owner, uri=row.uri, wallet=row.wallet,
                 metadata={m.key: "0x" + m.value for m in sorted(metadata, key=lambda m: m.key)})  # fmt: skip
