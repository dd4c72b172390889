"""Milvus boolean expressions -> PostgreSQL WHERE clauses over the shadow table.

Supported; tests/integration/test_filters.py checks each form (except those named further down) on a
real Milvus server (2.3.5, the local one) and PostgreSQL, both selecting the same primary keys:

- comparisons ``== != < <= > >=``, also reversed (``5 > x``) and as Milvus ranges ``1 < x < 5`` /
  ``10 >= x > 2`` (both signs the same direction; Milvus rejects other chains, so do we);
- ``in`` / ``not in`` lists, ``like``, ``is [not] null``, a Bool field alone;
- ``and``/``&&``, ``or``/``||``, ``not``/``!``, parentheses;
- JSON paths (``meta["a"]["b"]``, and dynamic fields, which live in ``$meta``), array indexing;
- one arithmetic step ``+ - * / %`` between a numeric field (or JSON value, or array element) and a
  number, as Milvus allows it: ``x % 3 == 0``, ``2 * x == 4``; integer ``/`` truncates toward zero and
  ``%`` takes the dividend's sign in Milvus, exactly PostgreSQL's bigint operators;
- ``array_contains[_all|_any]`` and ``json_contains[_all|_any]`` (one family in Milvus: each works on
  an Array field and on a JSON path), ``array_length``, ``exists``; functions in lower or upper case.

Refused with FilterConversionError naming the token and its position: ``**`` on a field (Milvus
allows it only between constants), a constant before ``- / %``, a second arithmetic step, ``%`` on
floats, a non-integer operand of integer or JSON arithmetic or a non-integer to compare it with
(Milvus rejects or silently truncates those), a zero divisor (Milvus 2.3 crashes on it), arithmetic
on the constant side, field-to-field comparisons, ``in`` lists mixing value types (Milvus rejects
them, or fails inside its query node on a JSON path), ``text_match`` (it matches tokens of Milvus'
analyzer, which SQL cannot reproduce exactly, and 2.3 has no text_match), and ``exists path and ...``
unparenthesized (Milvus applies exists to all of it).

Not verifiable on Milvus 2.3, so translated by their plain meaning, as current Milvus documents them:
arithmetic and ``array_length`` with ``< <= > >=`` (2.3 allows only ``==``/``!=`` there), ``like``
with an infix or suffix ``%`` (2.3 allows only prefixes and reads ``_`` literally, where PostgreSQL's
LIKE takes it as a one-character wildcard) and ``is null`` (no nullable fields before 2.5).

Milvus semantics the SQL reproduces (each observed on the server): a JSON value is compared only with
a literal of its own JSON type (``meta["id"] == "5"`` is false for the number 5; ``meta["category"] ==
1`` is false, not an error); logic is two-valued, so a missing JSON key fails a comparison but passes
``!=`` and ``not in``, an array index past the end fails even ``!=``, and ``not`` turns either around
(hence ``COALESCE`` where SQL would say NULL); ``array_length`` of a missing or non-array JSON value
is 0; ``exists`` is true for a key holding JSON null.

Literals are rendered from tokens the tokenizer has already classified (numbers are validated
numerals, strings are re-quoted with ``''`` escaping), so a filter can never inject SQL. A JSON path
is read as text (``#>>``) for comparisons and as jsonb (``#>``) for its type, containment, existence
and length.
"""

from __future__ import annotations

from task_components.schema.models import CollectionSchema
from task_components.shadow.filters.parser import Parser
from task_components.shadow.filters.tokens import Token, tokenize

__all__ = ["Token", "to_sql", "tokenize"]


def to_sql(expr: str, schema: CollectionSchema) -> str:
    """The WHERE clause (without ``WHERE``) selecting the rows ``expr`` selects in Milvus."""
    if not expr.strip():
        return "TRUE"
    return Parser(expr, schema).parse()
