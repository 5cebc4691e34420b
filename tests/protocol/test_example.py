"""The README's run command: the scripted session runs and shows what it claims."""

from __future__ import annotations

import io

from protocol.example import main


def test_example_session_runs_and_refuses_what_it_must() -> None:
    out = io.StringIO()
    assert main(out) == 0
    text = out.getvalue()
    assert "REFUSED  Bob tries to borrow 5,000 USDC more" in text
    assert "InsufficientCollateral" in text
    assert "InvalidSignature [signatures[0]]" in text
    assert "DuplicateTransaction" in text
    assert "FundingWasNotUpdated" in text
    assert "ok       A keeper cranks SOL-PERP funding on the hour" in text
    assert "13 records committed, gap-free." in text
