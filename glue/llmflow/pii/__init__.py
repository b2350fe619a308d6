"""Korean PII engine: detection (Presidio + Korean recognizers), policy actions, reversible
pseudonymisation and masking for logs.

Import the submodules you need: :mod:`llmflow.pii.engine` and :mod:`llmflow.pii.anonymize`
import Presidio (seconds), :mod:`llmflow.pii.config` and :mod:`llmflow.pii.report` do not.
"""
