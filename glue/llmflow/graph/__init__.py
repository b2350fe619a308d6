"""GraphRAG: the knowledge graph of seed 004 §2.5 with explicit cross-references.

``base`` holds the operation-level interface and its value types; one module per store
(``postgres`` for embedded mode, ``neo4j`` for cluster mode) implements it.
"""
