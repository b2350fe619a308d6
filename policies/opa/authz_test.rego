# Hand-written OPA tests for what the case table (cases_test.rego) cannot express: data
# overrides and invariants of the policy itself. Run with: opa test policies/opa
package llmflow.authz_test

import data.llmflow.authz

viewer_in(tenant) := {
	"subject": {"id": "u1", "tenant": tenant, "roles": ["viewer"], "kind": "user"},
	"action": "kb.read",
	"resource": {"type": "knowledge_base", "tenant": tenant, "id": "handbook"},
}

test_unknown_tenant_gets_defaults_by_default if {
	inp := viewer_in("acme")
	d := authz.decision with input as inp
	d.allow == true
}

test_unknown_tenant_denied_when_known_tenants_are_required if {
	inp := viewer_in("acme")
	d := authz.decision with input as inp with data.llmflow.settings.require_known_tenant as true
	d.allow == false
	d.reason == "unknown tenant acme"
}

test_known_tenant_allowed_when_known_tenants_are_required if {
	inp := viewer_in("dept-hr")
	d := authz.decision with input as inp with data.llmflow.settings.require_known_tenant as true
	d.allow == true
}

test_tenant_data_cannot_lift_the_external_model_rule if {
	inp := {
		"subject": {"id": "u1", "tenant": "dept-hr", "roles": ["developer"], "kind": "user"},
		"action": "model.use",
		"resource": {"type": "model", "tenant": "dept-hr", "id": "gpt-4o", "provider": "external"},
		"context": {"data_classification": "secret"},
	}
	tenants := {"dept-hr": {"allowed_models": ["gpt-4o"], "classification_ceiling": "secret"}}
	d := authz.decision with input as inp with data.llmflow.tenants as tenants
	d.allow == false
	contains(d.reason, "secret data never goes to an external model API")
}

test_invalid_ceiling_denies if {
	inp := viewer_in("dept-hr")
	tenants := {"dept-hr": {"classification_ceiling": "ultra"}}
	d := authz.decision with input as inp with data.llmflow.tenants as tenants
	d.allow == false
	contains(d.reason, "invalid classification ceiling ultra")
}

test_empty_input_is_denied_with_a_reason if {
	d := authz.decision with input as {}
	d.allow == false
	d.reason != ""
}

test_allow_follows_decision if {
	member := viewer_in("dept-hr")
	stranger := viewer_in("")
	authz.allow with input as member
	not authz.allow with input as stranger
}

test_every_role_grants_only_known_actions if {
	every _, granted in authz.realm_role_actions {
		every a in granted {
			a in authz.actions
		}
	}
	every _, granted in authz.api_key_role_actions {
		every a in granted {
			a in authz.actions
		}
	}
}

test_only_platform_admin_administers_tenants if {
	holders := {r | granted := authz.realm_role_actions[r]; "tenant.admin" in granted}
	holders == {"platform-admin"}
}
