# LLMFlow authorization: every allow/deny of the glue services (ARCHITECTURE §6).
#
# Rego v1. Query `data.llmflow.authz.decision` with the input document described in
# README.md; the answer is always an object {"allow": bool, "reason": string}.
# Deny by default: a request is allowed only when no deny rule fires and at least one role of
# the subject grants the action. Deny rules are listed one per reason so that the reason a
# caller sees names every rule that refused it.
package llmflow.authz

# ---------------------------------------------------------------- vocabulary

actions := {
	"kb.read", "kb.write", "kb.admin", "search", "ingest", "model.use",
	"training.submit", "tenant.admin", "audit.read", "pii.use", "app.run",
}

# Administrative actions: the only ones a platform-admin may perform in another tenant.
# Reading, searching, writing or ingesting another department's data is refused to everyone.
admin_actions := {"kb.admin", "tenant.admin", "audit.read"}

# Actions on one knowledge base (resource.id is the KB name): API-key KB grants apply.
kb_actions := {"kb.read", "kb.write", "search", "ingest"}

# Actions whose resource carries a data classification checked against the tenant ceiling.
classified_actions := {"kb.read", "kb.write", "kb.admin", "search", "ingest", "training.submit"}

subject_kinds := {"user", "service", "api_key"}

# Keycloak realm roles (seed 003 §10.1); they count only for user and service subjects.
# Fixed here, not in data, so that whoever writes tenant data cannot widen a role.
realm_role_actions := {
	"platform-admin": actions,
	"operator": {"kb.read", "search", "model.use", "audit.read", "pii.use", "app.run"},
	"developer": {
		"kb.read", "search", "model.use", "kb.write", "ingest", "kb.admin",
		"training.submit", "pii.use", "app.run",
	},
	"viewer": {"kb.read", "search", "model.use", "pii.use", "app.run"},
}

# LLMFlow API key roles (issue 2); they count only for api_key subjects.
api_key_role_actions := {
	"reader": {"kb.read", "search", "pii.use"},
	"editor": {"kb.read", "search", "kb.write", "ingest", "kb.admin", "pii.use"},
	# machine callers of the LLM gateway (Dify's model provider, ERP systems)
	# ... and of Dify apps through the ERP facade (POST /v1/apps/{app}/run)
	"model": {"model.use", "pii.use", "app.run"},
}

classification_rank := {"public": 0, "internal": 1, "confidential": 2, "secret": 3}

# The highest classification that may be sent to an external model API. Not tenant data:
# `confidential` and `secret` never leave, whatever a tenant is configured with.
external_model_max_rank := 1

default_classification := "internal"

# ---------------------------------------------------------------- input, normalised

subject := object.get(input, "subject", {})

resource := object.get(input, "resource", {})

context := object.get(input, "context", {})

action := object.get(input, "action", null)

subject_kind := object.get(subject, "kind", null)

subject_tenant := t if {
	t := object.get(subject, "tenant", "")
	is_string(t)
	t != ""
}

resource_tenant := t if {
	t := object.get(resource, "tenant", "")
	is_string(t)
	t != ""
}

subject_roles := {r | some r in object.get(subject, "roles", []); is_string(r)}

subject_kbs := {k | some k in object.get(subject, "knowledge_bases", []); is_string(k)}

effective_roles contains r if {
	subject_kind in {"user", "service"}
	some r in subject_roles
	realm_role_actions[r]
}

effective_roles contains r if {
	subject_kind == "api_key"
	some r in subject_roles
	api_key_role_actions[r]
}

role_grants(r) := realm_role_actions[r] if subject_kind in {"user", "service"}

role_grants(r) := api_key_role_actions[r] if subject_kind == "api_key"

platform_admin if {
	subject_kind in {"user", "service"}
	"platform-admin" in subject_roles
}

cross_tenant if not subject_tenant == resource_tenant

# ---------------------------------------------------------------- tenant data

# Tenant data lives under data.llmflow.tenants (written by the tenant control plane); a
# tenant without an entry gets data.llmflow.defaults. Paths are spelled out: reading
# data.llmflow as a whole would include this package and recurse.
default tenant_config := {}

known_tenant if data.llmflow.tenants[resource_tenant]

tenant_config := data.llmflow.tenants[resource_tenant]

tenant_config := data.llmflow.defaults if not known_tenant

ceiling := object.get(tenant_config, "classification_ceiling", "secret")

allowed_models := object.get(tenant_config, "allowed_models", [])

require_known_tenant if data.llmflow.settings.require_known_tenant == true

# Classification of the resource (KBs, documents, datasets) or of the data sent to a model.
resource_classification := object.get(resource, "classification", default_classification)

data_classification := object.get(context, "data_classification", default_classification)

checked_classification := data_classification if action == "model.use"

checked_classification := resource_classification if action != "model.use"

# ---------------------------------------------------------------- deny rules

deny contains "request has no action" if not is_string(action)

deny contains sprintf("unknown action %v", [action]) if {
	is_string(action)
	not action in actions
}

deny contains "subject has no kind" if not is_string(subject_kind)

deny contains sprintf("unknown subject kind %v", [subject_kind]) if {
	is_string(subject_kind)
	not subject_kind in subject_kinds
}

deny contains "subject has no tenant" if {
	not subject_tenant
	not platform_admin
}

deny contains "resource has no tenant" if not resource_tenant

deny contains msg if {
	resource_tenant
	cross_tenant
	not platform_admin
	msg := sprintf("cross-tenant access denied: subject tenant %v, resource tenant %v", [
		object.get(subject, "tenant", null), resource_tenant,
	])
}

deny contains msg if {
	resource_tenant
	cross_tenant
	platform_admin
	not action in admin_actions
	msg := sprintf(
		"cross-tenant access denied: platform-admin may administer tenant %v but not %v in it",
		[resource_tenant, action],
	)
}

deny contains sprintf("unknown tenant %v", [resource_tenant]) if {
	require_known_tenant
	resource_tenant
	not known_tenant
}

deny contains msg if {
	action in kb_actions
	count(subject_kbs) > 0
	not object.get(resource, "id", null) in subject_kbs
	msg := sprintf("knowledge base %v is outside the subject's knowledge-base grant", [
		object.get(resource, "id", null),
	])
}

deny contains "a subject limited to knowledge bases cannot administer knowledge bases" if {
	action == "kb.admin"
	count(subject_kbs) > 0
}

deny contains sprintf("unknown classification %v", [checked_classification]) if {
	action in (classified_actions | {"model.use"})
	not checked_classification in object.keys(classification_rank)
}

deny contains msg if {
	not ceiling in object.keys(classification_rank)
	msg := sprintf("tenant %v has an invalid classification ceiling %v", [resource_tenant, ceiling])
}

deny contains msg if {
	action in (classified_actions | {"model.use"})
	classification_rank[checked_classification] > classification_rank[ceiling]
	msg := sprintf("classification %v is above the ceiling %v of tenant %v", [
		checked_classification, ceiling, resource_tenant,
	])
}

deny contains sprintf("unknown model provider %v", [provider]) if {
	action == "model.use"
	provider := object.get(resource, "provider", "")
	not provider in {"internal", "external"}
}

deny contains msg if {
	action == "model.use"
	resource.provider == "external"
	classification_rank[data_classification] > external_model_max_rank
	msg := sprintf("%v data never goes to an external model API", [data_classification])
}

deny contains msg if {
	action == "model.use"
	not model_allowed
	msg := sprintf("model %v is not allowed for tenant %v", [
		object.get(resource, "id", null), object.get(resource, "tenant", null),
	])
}

deny contains msg if {
	action == "training.submit"
	gpus := object.get(context, "gpus", 0)
	limit := tenant_config.quotas.gpus
	gpus > limit
	msg := sprintf("training job asks for %v GPUs, tenant %v quota is %v", [
		gpus, resource_tenant, limit,
	])
}

# An explicitly listed model is allowed whatever its provider; the wildcard "*" stands for
# every internal model only, so an external API is used only when a tenant names it.
model_allowed if resource.id in allowed_models

model_allowed if {
	"*" in allowed_models
	resource.provider == "internal"
}

# ---------------------------------------------------------------- grants and decision

grants contains sprintf("role %v grants %v", [r, action]) if {
	some r in effective_roles
	action in role_grants(r)
}

default decision := {"allow": false, "reason": "denied by default"}

decision := {"allow": false, "reason": concat("; ", sort(deny))} if {
	count(deny) > 0
} else := {"allow": true, "reason": concat("; ", sort(grants))} if {
	count(grants) > 0
} else := {"allow": false, "reason": msg} if {
	msg := sprintf("no role of the subject grants %v (roles: %v)", [
		action, concat(", ", sort(subject_roles)),
	])
}

# Convenience for callers that only need the boolean (e.g. OPA's decision logs, dashboards).
allow := decision.allow
