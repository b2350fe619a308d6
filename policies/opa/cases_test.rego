# Generated from tests/unit/policy_cases.yaml by tests/unit/test_policy_cases.py;
# do not edit. Run with: opa test policies/opa
package llmflow.cases_test

import data.llmflow.apisix
import data.llmflow.authz

# viewer reads a kb of its tenant
test_authz_001_viewer_reads_a_kb_of_its_tenant if {
	d := authz.decision with input as {"action": "kb.read", "context": {}, "resource": {"id": "handbook", "tenant": "dept-hr", "type": "knowledge_base"}, "subject": {"groups": ["/tenants/dept-hr"], "id": "u-hr-viewer", "kind": "user", "knowledge_bases": [], "roles": ["viewer"], "tenant": "dept-hr"}}
	d.allow == true
	contains(d.reason, "role viewer grants kb.read")
}

# viewer searches a kb of its tenant
test_authz_002_viewer_searches_a_kb_of_its_tenant if {
	d := authz.decision with input as {"action": "search", "context": {}, "resource": {"id": "handbook", "tenant": "dept-hr", "type": "knowledge_base"}, "subject": {"groups": ["/tenants/dept-hr"], "id": "u-hr-viewer", "kind": "user", "knowledge_bases": [], "roles": ["viewer"], "tenant": "dept-hr"}}
	d.allow == true
	contains(d.reason, "role viewer grants search")
}

# viewer cannot read another tenant
test_authz_003_viewer_cannot_read_another_tenant if {
	d := authz.decision with input as {"action": "kb.read", "context": {}, "resource": {"id": "ledger", "tenant": "dept-finance", "type": "knowledge_base"}, "subject": {"groups": ["/tenants/dept-hr"], "id": "u-hr-viewer", "kind": "user", "knowledge_bases": [], "roles": ["viewer"], "tenant": "dept-hr"}}
	d.allow == false
	contains(d.reason, "cross-tenant access denied: subject tenant dept-hr, resource tenant dept-finance")
}

# search forged to another tenant in the resource
test_authz_004_search_forged_to_another_tenant_in_the_resource if {
	d := authz.decision with input as {"action": "search", "context": {}, "resource": {"id": "handbook", "tenant": "dept-finance", "type": "knowledge_base"}, "subject": {"groups": ["/tenants/dept-hr"], "id": "u-hr-dev", "kind": "user", "knowledge_bases": [], "roles": ["developer"], "tenant": "dept-hr"}}
	d.allow == false
	contains(d.reason, "cross-tenant access denied")
}

# subject forged to the resource tenant is still its own claim
test_authz_005_subject_forged_to_the_resource_tenant_is_still_its_own_claim if {
	d := authz.decision with input as {"action": "search", "context": {}, "resource": {"id": "handbook", "tenant": "dept-hr", "type": "knowledge_base"}, "subject": {"groups": ["/tenants/dept-finance"], "id": "u-fin-dev", "kind": "user", "knowledge_bases": [], "roles": ["developer"], "tenant": "dept-finance"}}
	d.allow == false
	contains(d.reason, "subject tenant dept-finance")
}

# user without roles reads nothing
test_authz_006_user_without_roles_reads_nothing if {
	d := authz.decision with input as {"action": "kb.read", "context": {}, "resource": {"id": "handbook", "tenant": "dept-hr", "type": "knowledge_base"}, "subject": {"groups": [], "id": "u-nobody", "kind": "user", "knowledge_bases": [], "roles": [], "tenant": "dept-hr"}}
	d.allow == false
	contains(d.reason, "no role of the subject grants kb.read")
}

# unknown realm role grants nothing
test_authz_007_unknown_realm_role_grants_nothing if {
	d := authz.decision with input as {"action": "kb.read", "context": {}, "resource": {"id": "handbook", "tenant": "dept-hr", "type": "knowledge_base"}, "subject": {"groups": ["/tenants/dept-hr"], "id": "u-hr-viewer", "kind": "user", "knowledge_bases": [], "roles": ["superuser", "offline_access"], "tenant": "dept-hr"}}
	d.allow == false
	contains(d.reason, "no role of the subject grants kb.read")
}

# user with data-plane role name only is not a reader
test_authz_008_user_with_data_plane_role_name_only_is_not_a_reader if {
	d := authz.decision with input as {"action": "kb.read", "context": {}, "resource": {"id": "handbook", "tenant": "dept-hr", "type": "knowledge_base"}, "subject": {"groups": ["/tenants/dept-hr"], "id": "u-hr-viewer", "kind": "user", "knowledge_bases": [], "roles": ["reader", "editor"], "tenant": "dept-hr"}}
	d.allow == false
	contains(d.reason, "no role of the subject grants kb.read")
}

# erp service account reads its tenant
test_authz_009_erp_service_account_reads_its_tenant if {
	d := authz.decision with input as {"action": "search", "context": {}, "resource": {"id": "ledger", "tenant": "dept-finance", "type": "knowledge_base"}, "subject": {"groups": [], "id": "service-account-erp", "kind": "service", "knowledge_bases": [], "roles": ["viewer"], "tenant": "dept-finance"}}
	d.allow == true
	contains(d.reason, "role viewer grants search")
}

# secret kb above the hr ceiling is refused
test_authz_010_secret_kb_above_the_hr_ceiling_is_refused if {
	d := authz.decision with input as {"action": "kb.read", "context": {}, "resource": {"classification": "secret", "id": "payroll", "tenant": "dept-hr", "type": "knowledge_base"}, "subject": {"groups": ["/tenants/dept-hr"], "id": "u-hr-dev", "kind": "user", "knowledge_bases": [], "roles": ["developer"], "tenant": "dept-hr"}}
	d.allow == false
	contains(d.reason, "classification secret is above the ceiling confidential of tenant dept-hr")
}

# secret kb in finance is readable
test_authz_011_secret_kb_in_finance_is_readable if {
	d := authz.decision with input as {"action": "kb.read", "context": {}, "resource": {"classification": "secret", "id": "ledger", "tenant": "dept-finance", "type": "knowledge_base"}, "subject": {"groups": ["/tenants/dept-finance"], "id": "u-fin-dev", "kind": "user", "knowledge_bases": [], "roles": ["developer"], "tenant": "dept-finance"}}
	d.allow == true
	contains(d.reason, "role developer grants kb.read")
}

# unknown classification is refused
test_authz_012_unknown_classification_is_refused if {
	d := authz.decision with input as {"action": "kb.read", "context": {}, "resource": {"classification": "top-secret", "id": "handbook", "tenant": "dept-hr", "type": "knowledge_base"}, "subject": {"groups": ["/tenants/dept-hr"], "id": "u-hr-dev", "kind": "user", "knowledge_bases": [], "roles": ["developer"], "tenant": "dept-hr"}}
	d.allow == false
	contains(d.reason, "unknown classification top-secret")
}

# developer writes a kb
test_authz_013_developer_writes_a_kb if {
	d := authz.decision with input as {"action": "kb.write", "context": {}, "resource": {"id": "handbook", "tenant": "dept-hr", "type": "knowledge_base"}, "subject": {"groups": ["/tenants/dept-hr"], "id": "u-hr-dev", "kind": "user", "knowledge_bases": [], "roles": ["developer"], "tenant": "dept-hr"}}
	d.allow == true
	contains(d.reason, "role developer grants kb.write")
}

# developer ingests
test_authz_014_developer_ingests if {
	d := authz.decision with input as {"action": "ingest", "context": {}, "resource": {"classification": "confidential", "id": "handbook", "tenant": "dept-hr", "type": "knowledge_base"}, "subject": {"groups": ["/tenants/dept-hr"], "id": "u-hr-dev", "kind": "user", "knowledge_bases": [], "roles": ["developer"], "tenant": "dept-hr"}}
	d.allow == true
	contains(d.reason, "role developer grants ingest")
}

# viewer cannot ingest
test_authz_015_viewer_cannot_ingest if {
	d := authz.decision with input as {"action": "ingest", "context": {}, "resource": {"id": "handbook", "tenant": "dept-hr", "type": "knowledge_base"}, "subject": {"groups": ["/tenants/dept-hr"], "id": "u-hr-viewer", "kind": "user", "knowledge_bases": [], "roles": ["viewer"], "tenant": "dept-hr"}}
	d.allow == false
	contains(d.reason, "no role of the subject grants ingest")
}

# operator cannot write data
test_authz_016_operator_cannot_write_data if {
	d := authz.decision with input as {"action": "kb.write", "context": {}, "resource": {"id": "handbook", "tenant": "dept-hr", "type": "knowledge_base"}, "subject": {"groups": ["/tenants/dept-hr"], "id": "u-hr-ops", "kind": "user", "knowledge_bases": [], "roles": ["operator"], "tenant": "dept-hr"}}
	d.allow == false
	contains(d.reason, "no role of the subject grants kb.write")
}

# developer cannot ingest into another tenant
test_authz_017_developer_cannot_ingest_into_another_tenant if {
	d := authz.decision with input as {"action": "ingest", "context": {}, "resource": {"id": "ledger", "tenant": "dept-finance", "type": "knowledge_base"}, "subject": {"groups": ["/tenants/dept-hr"], "id": "u-hr-dev", "kind": "user", "knowledge_bases": [], "roles": ["developer"], "tenant": "dept-hr"}}
	d.allow == false
	contains(d.reason, "cross-tenant access denied")
}

# ingest of confidential data into project-ai exceeds its ceiling
test_authz_018_ingest_of_confidential_data_into_project_ai_exceeds_its_ceiling if {
	d := authz.decision with input as {"action": "ingest", "context": {}, "resource": {"classification": "confidential", "id": "papers", "tenant": "project-ai", "type": "knowledge_base"}, "subject": {"groups": ["/tenants/project-ai"], "id": "u-ai-dev", "kind": "user", "knowledge_bases": [], "roles": ["developer"], "tenant": "project-ai"}}
	d.allow == false
	contains(d.reason, "classification confidential is above the ceiling internal of tenant project-ai")
}

# developer creates a kb
test_authz_019_developer_creates_a_kb if {
	d := authz.decision with input as {"action": "kb.admin", "context": {}, "resource": {"id": "new-kb", "tenant": "dept-hr", "type": "knowledge_base"}, "subject": {"groups": ["/tenants/dept-hr"], "id": "u-hr-dev", "kind": "user", "knowledge_bases": [], "roles": ["developer"], "tenant": "dept-hr"}}
	d.allow == true
	contains(d.reason, "role developer grants kb.admin")
}

# viewer cannot administer kbs
test_authz_020_viewer_cannot_administer_kbs if {
	d := authz.decision with input as {"action": "kb.admin", "context": {}, "resource": {"id": "new-kb", "tenant": "dept-hr", "type": "knowledge_base"}, "subject": {"groups": ["/tenants/dept-hr"], "id": "u-hr-viewer", "kind": "user", "knowledge_bases": [], "roles": ["viewer"], "tenant": "dept-hr"}}
	d.allow == false
	contains(d.reason, "no role of the subject grants kb.admin")
}

# reader key reads its granted kb
test_authz_021_reader_key_reads_its_granted_kb if {
	d := authz.decision with input as {"action": "search", "context": {}, "resource": {"id": "handbook", "tenant": "dept-hr", "type": "knowledge_base"}, "subject": {"groups": [], "id": "key-1", "kind": "api_key", "knowledge_bases": ["handbook"], "roles": ["reader"], "tenant": "dept-hr"}}
	d.allow == true
	contains(d.reason, "role reader grants search")
}

# reader key cannot read a kb outside its grant
test_authz_022_reader_key_cannot_read_a_kb_outside_its_grant if {
	d := authz.decision with input as {"action": "search", "context": {}, "resource": {"id": "payroll", "tenant": "dept-hr", "type": "knowledge_base"}, "subject": {"groups": [], "id": "key-1", "kind": "api_key", "knowledge_bases": ["handbook"], "roles": ["reader"], "tenant": "dept-hr"}}
	d.allow == false
	contains(d.reason, "knowledge base payroll is outside the subject's knowledge-base grant")
}

# reader key cannot write
test_authz_023_reader_key_cannot_write if {
	d := authz.decision with input as {"action": "kb.write", "context": {}, "resource": {"id": "handbook", "tenant": "dept-hr", "type": "knowledge_base"}, "subject": {"groups": [], "id": "key-1", "kind": "api_key", "knowledge_bases": ["handbook"], "roles": ["reader"], "tenant": "dept-hr"}}
	d.allow == false
	contains(d.reason, "no role of the subject grants kb.write")
}

# editor key ingests into its granted kb
test_authz_024_editor_key_ingests_into_its_granted_kb if {
	d := authz.decision with input as {"action": "ingest", "context": {}, "resource": {"id": "handbook", "tenant": "dept-hr", "type": "knowledge_base"}, "subject": {"groups": [], "id": "key-2", "kind": "api_key", "knowledge_bases": ["handbook"], "roles": ["editor"], "tenant": "dept-hr"}}
	d.allow == true
	contains(d.reason, "role editor grants ingest")
}

# kb-scoped editor key cannot create kbs
test_authz_025_kb_scoped_editor_key_cannot_create_kbs if {
	d := authz.decision with input as {"action": "kb.admin", "context": {}, "resource": {"id": "handbook", "tenant": "dept-hr", "type": "knowledge_base"}, "subject": {"groups": [], "id": "key-2", "kind": "api_key", "knowledge_bases": ["handbook"], "roles": ["editor"], "tenant": "dept-hr"}}
	d.allow == false
	contains(d.reason, "a subject limited to knowledge bases cannot administer knowledge bases")
}

# unscoped editor key creates kbs
test_authz_026_unscoped_editor_key_creates_kbs if {
	d := authz.decision with input as {"action": "kb.admin", "context": {}, "resource": {"id": "new-kb", "tenant": "dept-hr", "type": "knowledge_base"}, "subject": {"groups": [], "id": "key-3", "kind": "api_key", "knowledge_bases": [], "roles": ["editor"], "tenant": "dept-hr"}}
	d.allow == true
	contains(d.reason, "role editor grants kb.admin")
}

# unscoped reader key reads every kb of its tenant
test_authz_027_unscoped_reader_key_reads_every_kb_of_its_tenant if {
	d := authz.decision with input as {"action": "kb.read", "context": {}, "resource": {"id": "payroll", "tenant": "dept-hr", "type": "knowledge_base"}, "subject": {"groups": [], "id": "key-3", "kind": "api_key", "knowledge_bases": [], "roles": ["reader"], "tenant": "dept-hr"}}
	d.allow == true
	contains(d.reason, "role reader grants kb.read")
}

# another tenant's key on this tenant's kb
test_authz_028_another_tenant_s_key_on_this_tenant_s_kb if {
	d := authz.decision with input as {"action": "search", "context": {}, "resource": {"id": "handbook", "tenant": "dept-finance", "type": "knowledge_base"}, "subject": {"groups": [], "id": "key-1", "kind": "api_key", "knowledge_bases": ["handbook"], "roles": ["reader"], "tenant": "dept-hr"}}
	d.allow == false
	contains(d.reason, "cross-tenant access denied: subject tenant dept-hr, resource tenant dept-finance")
}

# an api key claiming platform-admin gets nothing
test_authz_029_an_api_key_claiming_platform_admin_gets_nothing if {
	d := authz.decision with input as {"action": "tenant.admin", "context": {}, "resource": {"id": "dept-finance", "tenant": "dept-finance", "type": "tenant"}, "subject": {"groups": [], "id": "key-1", "kind": "api_key", "knowledge_bases": [], "roles": ["platform-admin"], "tenant": "dept-hr"}}
	d.allow == false
	contains(d.reason, "cross-tenant access denied")
}

# an api key claiming platform-admin in its own tenant gets nothing
test_authz_030_an_api_key_claiming_platform_admin_in_its_own_tenant_gets_nothing if {
	d := authz.decision with input as {"action": "tenant.admin", "context": {}, "resource": {"id": "dept-hr", "tenant": "dept-hr", "type": "tenant"}, "subject": {"groups": [], "id": "key-3", "kind": "api_key", "knowledge_bases": [], "roles": ["platform-admin"], "tenant": "dept-hr"}}
	d.allow == false
	contains(d.reason, "no role of the subject grants tenant.admin")
}

# api keys do not use models
test_authz_031_api_keys_do_not_use_models if {
	d := authz.decision with input as {"action": "model.use", "context": {}, "resource": {"id": "qwen2.5-7b-instruct", "provider": "internal", "tenant": "dept-hr", "type": "model"}, "subject": {"groups": [], "id": "key-3", "kind": "api_key", "knowledge_bases": [], "roles": ["editor"], "tenant": "dept-hr"}}
	d.allow == false
	contains(d.reason, "no role of the subject grants model.use")
}

# viewer uses an internal model with confidential data
test_authz_032_viewer_uses_an_internal_model_with_confidential_data if {
	d := authz.decision with input as {"action": "model.use", "context": {"data_classification": "confidential"}, "resource": {"id": "qwen2.5-7b-instruct", "provider": "internal", "tenant": "dept-hr", "type": "model"}, "subject": {"groups": ["/tenants/dept-hr"], "id": "u-hr-viewer", "kind": "user", "knowledge_bases": [], "roles": ["viewer"], "tenant": "dept-hr"}}
	d.allow == true
	contains(d.reason, "role viewer grants model.use")
}

# confidential data never goes to an external model
test_authz_033_confidential_data_never_goes_to_an_external_model if {
	d := authz.decision with input as {"action": "model.use", "context": {"data_classification": "confidential"}, "resource": {"id": "gpt-4o-mini", "provider": "external", "tenant": "dept-hr", "type": "model"}, "subject": {"groups": ["/tenants/dept-hr"], "id": "u-hr-dev", "kind": "user", "knowledge_bases": [], "roles": ["developer"], "tenant": "dept-hr"}}
	d.allow == false
	contains(d.reason, "confidential data never goes to an external model API")
}

# secret data never goes to an external model even for platform-admin
test_authz_034_secret_data_never_goes_to_an_external_model_even_for_platform_admin if {
	d := authz.decision with input as {"action": "model.use", "context": {"data_classification": "secret"}, "resource": {"id": "gpt-4o-mini", "provider": "external", "tenant": "dept-hr", "type": "model"}, "subject": {"groups": [], "id": "u-admin", "kind": "user", "knowledge_bases": [], "roles": ["platform-admin"], "tenant": "dept-hr"}}
	d.allow == false
	contains(d.reason, "secret data never goes to an external model API")
}

# internal data may use an allowed external model
test_authz_035_internal_data_may_use_an_allowed_external_model if {
	d := authz.decision with input as {"action": "model.use", "context": {"data_classification": "internal"}, "resource": {"id": "gpt-4o-mini", "provider": "external", "tenant": "dept-hr", "type": "model"}, "subject": {"groups": ["/tenants/dept-hr"], "id": "u-hr-dev", "kind": "user", "knowledge_bases": [], "roles": ["developer"], "tenant": "dept-hr"}}
	d.allow == true
	contains(d.reason, "role developer grants model.use")
}

# public data may use an allowed external model
test_authz_036_public_data_may_use_an_allowed_external_model if {
	d := authz.decision with input as {"action": "model.use", "context": {"data_classification": "public"}, "resource": {"id": "gpt-4o-mini", "provider": "external", "tenant": "project-ai", "type": "model"}, "subject": {"groups": ["/tenants/project-ai"], "id": "u-ai-dev", "kind": "user", "knowledge_bases": [], "roles": ["developer"], "tenant": "project-ai"}}
	d.allow == true
	contains(d.reason, "role developer grants model.use")
}

# wildcard does not cover external models
test_authz_037_wildcard_does_not_cover_external_models if {
	d := authz.decision with input as {"action": "model.use", "context": {"data_classification": "public"}, "resource": {"id": "gpt-4o-mini", "provider": "external", "tenant": "dept-finance", "type": "model"}, "subject": {"groups": ["/tenants/dept-finance"], "id": "u-fin-dev", "kind": "user", "knowledge_bases": [], "roles": ["developer"], "tenant": "dept-finance"}}
	d.allow == false
	contains(d.reason, "model gpt-4o-mini is not allowed for tenant dept-finance")
}

# model outside the tenant list is refused
test_authz_038_model_outside_the_tenant_list_is_refused if {
	d := authz.decision with input as {"action": "model.use", "context": {}, "resource": {"id": "qwen2.5-72b-instruct", "provider": "internal", "tenant": "dept-hr", "type": "model"}, "subject": {"groups": ["/tenants/dept-hr"], "id": "u-hr-dev", "kind": "user", "knowledge_bases": [], "roles": ["developer"], "tenant": "dept-hr"}}
	d.allow == false
	contains(d.reason, "model qwen2.5-72b-instruct is not allowed for tenant dept-hr")
}

# missing data classification counts as internal
test_authz_039_missing_data_classification_counts_as_internal if {
	d := authz.decision with input as {"action": "model.use", "context": {}, "resource": {"id": "gpt-4o-mini", "provider": "external", "tenant": "dept-hr", "type": "model"}, "subject": {"groups": ["/tenants/dept-hr"], "id": "u-hr-dev", "kind": "user", "knowledge_bases": [], "roles": ["developer"], "tenant": "dept-hr"}}
	d.allow == true
	contains(d.reason, "role developer grants model.use")
}

# unknown model provider is refused
test_authz_040_unknown_model_provider_is_refused if {
	d := authz.decision with input as {"action": "model.use", "context": {}, "resource": {"id": "qwen2.5-7b-instruct", "provider": "partner", "tenant": "dept-hr", "type": "model"}, "subject": {"groups": ["/tenants/dept-hr"], "id": "u-hr-dev", "kind": "user", "knowledge_bases": [], "roles": ["developer"], "tenant": "dept-hr"}}
	d.allow == false
	contains(d.reason, "unknown model provider partner")
}

# data above the tenant ceiling is refused even internally
test_authz_041_data_above_the_tenant_ceiling_is_refused_even_internally if {
	d := authz.decision with input as {"action": "model.use", "context": {"data_classification": "confidential"}, "resource": {"id": "qwen2.5-7b-instruct", "provider": "internal", "tenant": "project-ai", "type": "model"}, "subject": {"groups": ["/tenants/project-ai"], "id": "u-ai-dev", "kind": "user", "knowledge_bases": [], "roles": ["developer"], "tenant": "project-ai"}}
	d.allow == false
	contains(d.reason, "classification confidential is above the ceiling internal of tenant project-ai")
}

# model use for another tenant is refused
test_authz_042_model_use_for_another_tenant_is_refused if {
	d := authz.decision with input as {"action": "model.use", "context": {}, "resource": {"id": "qwen2.5-7b-instruct", "provider": "internal", "tenant": "project-ai", "type": "model"}, "subject": {"groups": ["/tenants/dept-hr"], "id": "u-hr-dev", "kind": "user", "knowledge_bases": [], "roles": ["developer"], "tenant": "dept-hr"}}
	d.allow == false
	contains(d.reason, "cross-tenant access denied")
}

# developer submits training within quota
test_authz_043_developer_submits_training_within_quota if {
	d := authz.decision with input as {"action": "training.submit", "context": {"gpus": 2}, "resource": {"id": "lora-1", "tenant": "dept-finance", "type": "training_job"}, "subject": {"groups": ["/tenants/dept-finance"], "id": "u-fin-dev", "kind": "user", "knowledge_bases": [], "roles": ["developer"], "tenant": "dept-finance"}}
	d.allow == true
	contains(d.reason, "role developer grants training.submit")
}

# training above the gpu quota is refused
test_authz_044_training_above_the_gpu_quota_is_refused if {
	d := authz.decision with input as {"action": "training.submit", "context": {"gpus": 4}, "resource": {"id": "lora-2", "tenant": "dept-finance", "type": "training_job"}, "subject": {"groups": ["/tenants/dept-finance"], "id": "u-fin-dev", "kind": "user", "knowledge_bases": [], "roles": ["developer"], "tenant": "dept-finance"}}
	d.allow == false
	contains(d.reason, "training job asks for 4 GPUs")
}

# viewer cannot submit training
test_authz_045_viewer_cannot_submit_training if {
	d := authz.decision with input as {"action": "training.submit", "context": {}, "resource": {"id": "lora-3", "tenant": "dept-hr", "type": "training_job"}, "subject": {"groups": ["/tenants/dept-hr"], "id": "u-hr-viewer", "kind": "user", "knowledge_bases": [], "roles": ["viewer"], "tenant": "dept-hr"}}
	d.allow == false
	contains(d.reason, "no role of the subject grants training.submit")
}

# operator cannot submit training
test_authz_046_operator_cannot_submit_training if {
	d := authz.decision with input as {"action": "training.submit", "context": {}, "resource": {"id": "lora-4", "tenant": "dept-hr", "type": "training_job"}, "subject": {"groups": ["/tenants/dept-hr"], "id": "u-hr-ops", "kind": "user", "knowledge_bases": [], "roles": ["operator"], "tenant": "dept-hr"}}
	d.allow == false
	contains(d.reason, "no role of the subject grants training.submit")
}

# operator reads its tenant audit log
test_authz_047_operator_reads_its_tenant_audit_log if {
	d := authz.decision with input as {"action": "audit.read", "context": {}, "resource": {"id": "audit", "tenant": "dept-hr", "type": "audit"}, "subject": {"groups": ["/tenants/dept-hr"], "id": "u-hr-ops", "kind": "user", "knowledge_bases": [], "roles": ["operator"], "tenant": "dept-hr"}}
	d.allow == true
	contains(d.reason, "role operator grants audit.read")
}

# operator cannot read another tenant audit log
test_authz_048_operator_cannot_read_another_tenant_audit_log if {
	d := authz.decision with input as {"action": "audit.read", "context": {}, "resource": {"id": "audit", "tenant": "dept-finance", "type": "audit"}, "subject": {"groups": ["/tenants/dept-hr"], "id": "u-hr-ops", "kind": "user", "knowledge_bases": [], "roles": ["operator"], "tenant": "dept-hr"}}
	d.allow == false
	contains(d.reason, "cross-tenant access denied")
}

# developer cannot read the audit log
test_authz_049_developer_cannot_read_the_audit_log if {
	d := authz.decision with input as {"action": "audit.read", "context": {}, "resource": {"id": "audit", "tenant": "dept-hr", "type": "audit"}, "subject": {"groups": ["/tenants/dept-hr"], "id": "u-hr-dev", "kind": "user", "knowledge_bases": [], "roles": ["developer"], "tenant": "dept-hr"}}
	d.allow == false
	contains(d.reason, "no role of the subject grants audit.read")
}

# operator is not a tenant admin
test_authz_050_operator_is_not_a_tenant_admin if {
	d := authz.decision with input as {"action": "tenant.admin", "context": {}, "resource": {"id": "dept-hr", "tenant": "dept-hr", "type": "tenant"}, "subject": {"groups": ["/tenants/dept-hr"], "id": "u-hr-ops", "kind": "user", "knowledge_bases": [], "roles": ["operator"], "tenant": "dept-hr"}}
	d.allow == false
	contains(d.reason, "no role of the subject grants tenant.admin")
}

# platform-admin administers another tenant
test_authz_051_platform_admin_administers_another_tenant if {
	d := authz.decision with input as {"action": "tenant.admin", "context": {}, "resource": {"id": "dept-finance", "tenant": "dept-finance", "type": "tenant"}, "subject": {"groups": [], "id": "u-admin", "kind": "user", "knowledge_bases": [], "roles": ["platform-admin"], "tenant": "dept-hr"}}
	d.allow == true
	contains(d.reason, "role platform-admin grants tenant.admin")
}

# platform-admin reads another tenant audit log
test_authz_052_platform_admin_reads_another_tenant_audit_log if {
	d := authz.decision with input as {"action": "audit.read", "context": {}, "resource": {"id": "audit", "tenant": "project-ai", "type": "audit"}, "subject": {"groups": [], "id": "u-admin", "kind": "user", "knowledge_bases": [], "roles": ["platform-admin"], "tenant": "dept-hr"}}
	d.allow == true
	contains(d.reason, "role platform-admin grants audit.read")
}

# platform-admin manages kbs of another tenant
test_authz_053_platform_admin_manages_kbs_of_another_tenant if {
	d := authz.decision with input as {"action": "kb.admin", "context": {}, "resource": {"id": "ledger", "tenant": "dept-finance", "type": "knowledge_base"}, "subject": {"groups": [], "id": "u-admin", "kind": "user", "knowledge_bases": [], "roles": ["platform-admin"], "tenant": "dept-hr"}}
	d.allow == true
	contains(d.reason, "role platform-admin grants kb.admin")
}

# platform-admin cannot read another tenant data
test_authz_054_platform_admin_cannot_read_another_tenant_data if {
	d := authz.decision with input as {"action": "kb.read", "context": {}, "resource": {"id": "ledger", "tenant": "dept-finance", "type": "knowledge_base"}, "subject": {"groups": [], "id": "u-admin", "kind": "user", "knowledge_bases": [], "roles": ["platform-admin"], "tenant": "dept-hr"}}
	d.allow == false
	contains(d.reason, "platform-admin may administer tenant dept-finance but not kb.read in it")
}

# platform-admin cannot search another tenant
test_authz_055_platform_admin_cannot_search_another_tenant if {
	d := authz.decision with input as {"action": "search", "context": {}, "resource": {"id": "ledger", "tenant": "dept-finance", "type": "knowledge_base"}, "subject": {"groups": [], "id": "u-admin", "kind": "user", "knowledge_bases": [], "roles": ["platform-admin"], "tenant": "dept-hr"}}
	d.allow == false
	contains(d.reason, "but not search in it")
}

# platform-admin reads its own tenant
test_authz_056_platform_admin_reads_its_own_tenant if {
	d := authz.decision with input as {"action": "kb.read", "context": {}, "resource": {"id": "handbook", "tenant": "dept-hr", "type": "knowledge_base"}, "subject": {"groups": [], "id": "u-admin", "kind": "user", "knowledge_bases": [], "roles": ["platform-admin"], "tenant": "dept-hr"}}
	d.allow == true
	contains(d.reason, "role platform-admin grants kb.read")
}

# platform-admin without a tenant administers tenants
test_authz_057_platform_admin_without_a_tenant_administers_tenants if {
	d := authz.decision with input as {"action": "tenant.admin", "context": {}, "resource": {"id": "dept-hr", "tenant": "dept-hr", "type": "tenant"}, "subject": {"groups": [], "id": "u-root", "kind": "user", "knowledge_bases": [], "roles": ["platform-admin"], "tenant": ""}}
	d.allow == true
	contains(d.reason, "role platform-admin grants tenant.admin")
}

# platform-admin without a tenant reads no data
test_authz_058_platform_admin_without_a_tenant_reads_no_data if {
	d := authz.decision with input as {"action": "ingest", "context": {}, "resource": {"id": "handbook", "tenant": "dept-hr", "type": "knowledge_base"}, "subject": {"groups": [], "id": "u-root", "kind": "user", "knowledge_bases": [], "roles": ["platform-admin"], "tenant": ""}}
	d.allow == false
	contains(d.reason, "cross-tenant access denied")
}

# erp service account runs an app of its tenant
test_authz_059_erp_service_account_runs_an_app_of_its_tenant if {
	d := authz.decision with input as {"action": "app.run", "context": {}, "resource": {"id": "po-summary", "tenant": "dept-finance", "type": "app"}, "subject": {"groups": [], "id": "service-account-erp", "kind": "service", "knowledge_bases": [], "roles": ["viewer"], "tenant": "dept-finance"}}
	d.allow == true
	contains(d.reason, "role viewer grants app.run")
}

# erp service account cannot run another tenant's app
test_authz_060_erp_service_account_cannot_run_another_tenant_s_app if {
	d := authz.decision with input as {"action": "app.run", "context": {}, "resource": {"id": "po-summary", "tenant": "dept-hr", "type": "app"}, "subject": {"groups": [], "id": "service-account-erp", "kind": "service", "knowledge_bases": [], "roles": ["viewer"], "tenant": "dept-finance"}}
	d.allow == false
	contains(d.reason, "cross-tenant access denied")
}

# model key runs an app
test_authz_061_model_key_runs_an_app if {
	d := authz.decision with input as {"action": "app.run", "context": {}, "resource": {"id": "leave-bot", "tenant": "dept-hr", "type": "app"}, "subject": {"groups": [], "id": "key-3", "kind": "api_key", "knowledge_bases": [], "roles": ["model"], "tenant": "dept-hr"}}
	d.allow == true
	contains(d.reason, "role model grants app.run")
}

# reader key cannot run apps
test_authz_062_reader_key_cannot_run_apps if {
	d := authz.decision with input as {"action": "app.run", "context": {}, "resource": {"id": "leave-bot", "tenant": "dept-hr", "type": "app"}, "subject": {"groups": [], "id": "key-1", "kind": "api_key", "knowledge_bases": ["handbook"], "roles": ["reader"], "tenant": "dept-hr"}}
	d.allow == false
	contains(d.reason, "no role of the subject grants app.run")
}

# user without roles cannot run apps
test_authz_063_user_without_roles_cannot_run_apps if {
	d := authz.decision with input as {"action": "app.run", "context": {}, "resource": {"id": "leave-bot", "tenant": "dept-hr", "type": "app"}, "subject": {"groups": [], "id": "u-nobody", "kind": "user", "knowledge_bases": [], "roles": [], "tenant": "dept-hr"}}
	d.allow == false
	contains(d.reason, "no role of the subject grants app.run")
}

# viewer uses the pii service of its tenant
test_authz_064_viewer_uses_the_pii_service_of_its_tenant if {
	d := authz.decision with input as {"action": "pii.use", "context": {}, "resource": {"id": "analyze", "tenant": "dept-hr", "type": "pii"}, "subject": {"groups": ["/tenants/dept-hr"], "id": "u-hr-viewer", "kind": "user", "knowledge_bases": [], "roles": ["viewer"], "tenant": "dept-hr"}}
	d.allow == true
	contains(d.reason, "role viewer grants pii.use")
}

# reader key uses the pii service
test_authz_065_reader_key_uses_the_pii_service if {
	d := authz.decision with input as {"action": "pii.use", "context": {}, "resource": {"id": "anonymize", "tenant": "dept-hr", "type": "pii"}, "subject": {"groups": [], "id": "key-1", "kind": "api_key", "knowledge_bases": ["handbook"], "roles": ["reader"], "tenant": "dept-hr"}}
	d.allow == true
	contains(d.reason, "role reader grants pii.use")
}

# user without roles cannot use the pii service
test_authz_066_user_without_roles_cannot_use_the_pii_service if {
	d := authz.decision with input as {"action": "pii.use", "context": {}, "resource": {"id": "analyze", "tenant": "dept-hr", "type": "pii"}, "subject": {"groups": [], "id": "u-nobody", "kind": "user", "knowledge_bases": [], "roles": [], "tenant": "dept-hr"}}
	d.allow == false
	contains(d.reason, "no role of the subject grants pii.use")
}

# pii service of another tenant is refused
test_authz_067_pii_service_of_another_tenant_is_refused if {
	d := authz.decision with input as {"action": "pii.use", "context": {}, "resource": {"id": "anonymize", "tenant": "dept-finance", "type": "pii"}, "subject": {"groups": ["/tenants/dept-hr"], "id": "u-hr-viewer", "kind": "user", "knowledge_bases": [], "roles": ["viewer"], "tenant": "dept-hr"}}
	d.allow == false
	contains(d.reason, "cross-tenant access denied")
}

# platform-admin cannot use another tenant's pii policy
test_authz_068_platform_admin_cannot_use_another_tenant_s_pii_policy if {
	d := authz.decision with input as {"action": "pii.use", "context": {}, "resource": {"id": "anonymize", "tenant": "dept-finance", "type": "pii"}, "subject": {"groups": [], "id": "u-admin", "kind": "user", "knowledge_bases": [], "roles": ["platform-admin"], "tenant": "dept-hr"}}
	d.allow == false
	contains(d.reason, "platform-admin may administer tenant dept-finance but not pii.use in it")
}

# unknown action
test_authz_069_unknown_action if {
	d := authz.decision with input as {"action": "kb.delete-everything", "context": {}, "resource": {"id": "handbook", "tenant": "dept-hr", "type": "knowledge_base"}, "subject": {"groups": [], "id": "u-admin", "kind": "user", "knowledge_bases": [], "roles": ["platform-admin"], "tenant": "dept-hr"}}
	d.allow == false
	contains(d.reason, "unknown action kb.delete-everything")
}

# resource without tenant
test_authz_070_resource_without_tenant if {
	d := authz.decision with input as {"action": "kb.read", "context": {}, "resource": {"id": "handbook", "type": "knowledge_base"}, "subject": {"groups": ["/tenants/dept-hr"], "id": "u-hr-dev", "kind": "user", "knowledge_bases": [], "roles": ["developer"], "tenant": "dept-hr"}}
	d.allow == false
	contains(d.reason, "resource has no tenant")
}

# subject without tenant
test_authz_071_subject_without_tenant if {
	d := authz.decision with input as {"action": "kb.read", "context": {}, "resource": {"id": "handbook", "tenant": "dept-hr", "type": "knowledge_base"}, "subject": {"groups": ["/tenants/dept-hr"], "id": "u-hr-dev", "kind": "user", "knowledge_bases": [], "roles": ["developer"], "tenant": ""}}
	d.allow == false
	contains(d.reason, "subject has no tenant")
}

# unknown subject kind
test_authz_072_unknown_subject_kind if {
	d := authz.decision with input as {"action": "kb.read", "context": {}, "resource": {"id": "handbook", "tenant": "dept-hr", "type": "knowledge_base"}, "subject": {"groups": ["/tenants/dept-hr"], "id": "u-hr-dev", "kind": "robot", "knowledge_bases": [], "roles": ["developer"], "tenant": "dept-hr"}}
	d.allow == false
	contains(d.reason, "unknown subject kind robot")
}

# empty input
test_authz_073_empty_input if {
	d := authz.decision with input as {}
	d.allow == false
	contains(d.reason, "resource has no tenant")
}

# tenant given as a number
test_authz_074_tenant_given_as_a_number if {
	d := authz.decision with input as {"action": "kb.read", "context": {}, "resource": {"id": "handbook", "tenant": 7, "type": "knowledge_base"}, "subject": {"groups": ["/tenants/dept-hr"], "id": "u-hr-dev", "kind": "user", "knowledge_bases": [], "roles": ["developer"], "tenant": 7}}
	d.allow == false
	contains(d.reason, "subject has no tenant")
}

# quote and newline in a resource id are harmless
test_authz_075_quote_and_newline_in_a_resource_id_are_harmless if {
	d := authz.decision with input as {"action": "search", "context": {}, "resource": {"id": "hand\"book\nx", "tenant": "dept-hr", "type": "knowledge_base"}, "subject": {"groups": [], "id": "key-1", "kind": "api_key", "knowledge_bases": ["handbook"], "roles": ["reader"], "tenant": "dept-hr"}}
	d.allow == false
	contains(d.reason, "outside the subject's knowledge-base grant")
}

# unknown tenant gets the defaults
test_authz_076_unknown_tenant_gets_the_defaults if {
	d := authz.decision with input as {"action": "model.use", "context": {"data_classification": "secret"}, "resource": {"id": "qwen2.5-7b-instruct", "provider": "internal", "tenant": "acme", "type": "model"}, "subject": {"groups": ["/tenants/dept-hr"], "id": "u-hr-dev", "kind": "user", "knowledge_bases": [], "roles": ["developer"], "tenant": "acme"}}
	d.allow == false
	contains(d.reason, "classification secret is above the ceiling confidential of tenant acme")
}

# verified user gets the tenant header
test_apisix_001_verified_user_gets_the_tenant_header if {
	d := apisix.decision with input as {"request": {"headers": {"authorization": "Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6InRlc3QiLCJ0eXAiOiJKV1QifQ.eyJhdWQiOlsibGxtZmxvdy1hcGkiLCJhY2NvdW50Il0sInJlYWxtX2FjY2VzcyI6eyJyb2xlcyI6WyJ2aWV3ZXIiXX0sInN1YiI6InUxIiwidGVuYW50IjoiZGVwdC1ociJ9.c2ln", "host": "llm.example.com", "user-agent": "curl/8.5.0", "x-access-token": "eyJhbGciOiJSUzI1NiIsImtpZCI6InRlc3QiLCJ0eXAiOiJKV1QifQ.eyJhdWQiOlsibGxtZmxvdy1hcGkiLCJhY2NvdW50Il0sInJlYWxtX2FjY2VzcyI6eyJyb2xlcyI6WyJ2aWV3ZXIiXX0sInN1YiI6InUxIiwidGVuYW50IjoiZGVwdC1ociJ9.c2ln"}, "host": "llm.example.com", "method": "POST", "path": "/v1/search", "port": 443, "query": {}, "scheme": "https"}, "route": {"id": "glue-api", "labels": {"llmflow-roles": "viewer,developer,operator,platform-admin"}, "plugins": {"opa": {"host": "http://opa:8181", "policy": "llmflow/apisix", "send_headers_upstream": ["X-Tenant-Id"], "with_route": true}, "openid-connect": {"bearer_only": true, "client_id": "apisix", "discovery": "http://keycloak/realms/llmflow/.well-known/openid-configuration", "use_jwks": true}}, "uris": ["/v1/search", "/v1/kb/*"]}, "type": "http", "var": {"remote_addr": "10.1.2.3", "remote_port": "53412", "server_addr": "10.0.0.5", "server_port": "9443", "timestamp": 1767225600}}
	d.allow == true
	d.status_code == 200
	d.headers == {"X-Tenant-Id": "dept-hr"}
	contains(d.reason, "tenant dept-hr")
}

# token only in authorization header
test_apisix_002_token_only_in_authorization_header if {
	d := apisix.decision with input as {"request": {"headers": {"authorization": "Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6InRlc3QiLCJ0eXAiOiJKV1QifQ.eyJhdWQiOiJsbG1mbG93LWFwaSIsInJlYWxtX2FjY2VzcyI6eyJyb2xlcyI6WyJkZXZlbG9wZXIiXX0sInN1YiI6InUxIiwidGVuYW50IjoiZGVwdC1ociJ9.c2ln", "host": "llm.example.com", "user-agent": "curl/8.5.0"}, "host": "llm.example.com", "method": "POST", "path": "/v1/search", "port": 443, "query": {}, "scheme": "https"}, "route": {"id": "glue-api", "labels": {"llmflow-roles": "viewer,developer,operator,platform-admin"}, "plugins": {"opa": {"host": "http://opa:8181", "policy": "llmflow/apisix", "send_headers_upstream": ["X-Tenant-Id"], "with_route": true}, "openid-connect": {"bearer_only": true, "client_id": "apisix", "discovery": "http://keycloak/realms/llmflow/.well-known/openid-configuration", "use_jwks": true}}, "uris": ["/v1/search", "/v1/kb/*"]}, "type": "http", "var": {"remote_addr": "10.1.2.3", "remote_port": "53412", "server_addr": "10.0.0.5", "server_port": "9443", "timestamp": 1767225600}}
	d.allow == true
	d.status_code == 200
	d.headers == {"X-Tenant-Id": "dept-hr"}
	contains(d.reason, "tenant dept-hr")
}

# no token
test_apisix_003_no_token if {
	d := apisix.decision with input as {"request": {"headers": {"host": "llm.example.com", "user-agent": "curl/8.5.0"}, "host": "llm.example.com", "method": "POST", "path": "/v1/search", "port": 443, "query": {}, "scheme": "https"}, "route": {"id": "glue-api", "labels": {"llmflow-roles": "viewer,developer,operator,platform-admin"}, "plugins": {"opa": {"host": "http://opa:8181", "policy": "llmflow/apisix", "send_headers_upstream": ["X-Tenant-Id"], "with_route": true}, "openid-connect": {"bearer_only": true, "client_id": "apisix", "discovery": "http://keycloak/realms/llmflow/.well-known/openid-configuration", "use_jwks": true}}, "uris": ["/v1/search", "/v1/kb/*"]}, "type": "http", "var": {"remote_addr": "10.1.2.3", "remote_port": "53412", "server_addr": "10.0.0.5", "server_port": "9443", "timestamp": 1767225600}}
	d.allow == false
	d.status_code == 401
	d.headers == {}
	contains(d.reason, "no bearer token in the request")
}

# token without tenant
test_apisix_004_token_without_tenant if {
	d := apisix.decision with input as {"request": {"headers": {"authorization": "Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6InRlc3QiLCJ0eXAiOiJKV1QifQ.eyJhdWQiOiJsbG1mbG93LWFwaSIsInJlYWxtX2FjY2VzcyI6eyJyb2xlcyI6WyJ2aWV3ZXIiXX0sInN1YiI6InUxIn0.c2ln", "host": "llm.example.com", "user-agent": "curl/8.5.0", "x-access-token": "eyJhbGciOiJSUzI1NiIsImtpZCI6InRlc3QiLCJ0eXAiOiJKV1QifQ.eyJhdWQiOiJsbG1mbG93LWFwaSIsInJlYWxtX2FjY2VzcyI6eyJyb2xlcyI6WyJ2aWV3ZXIiXX0sInN1YiI6InUxIn0.c2ln"}, "host": "llm.example.com", "method": "POST", "path": "/v1/search", "port": 443, "query": {}, "scheme": "https"}, "route": {"id": "glue-api", "labels": {"llmflow-roles": "viewer,developer,operator,platform-admin"}, "plugins": {"opa": {"host": "http://opa:8181", "policy": "llmflow/apisix", "send_headers_upstream": ["X-Tenant-Id"], "with_route": true}, "openid-connect": {"bearer_only": true, "client_id": "apisix", "discovery": "http://keycloak/realms/llmflow/.well-known/openid-configuration", "use_jwks": true}}, "uris": ["/v1/search", "/v1/kb/*"]}, "type": "http", "var": {"remote_addr": "10.1.2.3", "remote_port": "53412", "server_addr": "10.0.0.5", "server_port": "9443", "timestamp": 1767225600}}
	d.allow == false
	d.status_code == 403
	d.headers == {}
	contains(d.reason, "token has no valid tenant claim")
}

# tenant claim with injection characters
test_apisix_005_tenant_claim_with_injection_characters if {
	d := apisix.decision with input as {"request": {"headers": {"authorization": "Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6InRlc3QiLCJ0eXAiOiJKV1QifQ.eyJhdWQiOiJsbG1mbG93LWFwaSIsInJlYWxtX2FjY2VzcyI6eyJyb2xlcyI6WyJ2aWV3ZXIiXX0sInN1YiI6InUxIiwidGVuYW50IjoiZGVwdC1oclwiIHx8IHRydWUifQ.c2ln", "host": "llm.example.com", "user-agent": "curl/8.5.0", "x-access-token": "eyJhbGciOiJSUzI1NiIsImtpZCI6InRlc3QiLCJ0eXAiOiJKV1QifQ.eyJhdWQiOiJsbG1mbG93LWFwaSIsInJlYWxtX2FjY2VzcyI6eyJyb2xlcyI6WyJ2aWV3ZXIiXX0sInN1YiI6InUxIiwidGVuYW50IjoiZGVwdC1oclwiIHx8IHRydWUifQ.c2ln"}, "host": "llm.example.com", "method": "POST", "path": "/v1/search", "port": 443, "query": {}, "scheme": "https"}, "route": {"id": "glue-api", "labels": {"llmflow-roles": "viewer,developer,operator,platform-admin"}, "plugins": {"opa": {"host": "http://opa:8181", "policy": "llmflow/apisix", "send_headers_upstream": ["X-Tenant-Id"], "with_route": true}, "openid-connect": {"bearer_only": true, "client_id": "apisix", "discovery": "http://keycloak/realms/llmflow/.well-known/openid-configuration", "use_jwks": true}}, "uris": ["/v1/search", "/v1/kb/*"]}, "type": "http", "var": {"remote_addr": "10.1.2.3", "remote_port": "53412", "server_addr": "10.0.0.5", "server_port": "9443", "timestamp": 1767225600}}
	d.allow == false
	d.status_code == 403
	d.headers == {}
	contains(d.reason, "token has no valid tenant claim")
}

# wrong audience
test_apisix_006_wrong_audience if {
	d := apisix.decision with input as {"request": {"headers": {"authorization": "Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6InRlc3QiLCJ0eXAiOiJKV1QifQ.eyJhdWQiOiJvdGhlci1hcGkiLCJyZWFsbV9hY2Nlc3MiOnsicm9sZXMiOlsidmlld2VyIl19LCJzdWIiOiJ1MSIsInRlbmFudCI6ImRlcHQtaHIifQ.c2ln", "host": "llm.example.com", "user-agent": "curl/8.5.0", "x-access-token": "eyJhbGciOiJSUzI1NiIsImtpZCI6InRlc3QiLCJ0eXAiOiJKV1QifQ.eyJhdWQiOiJvdGhlci1hcGkiLCJyZWFsbV9hY2Nlc3MiOnsicm9sZXMiOlsidmlld2VyIl19LCJzdWIiOiJ1MSIsInRlbmFudCI6ImRlcHQtaHIifQ.c2ln"}, "host": "llm.example.com", "method": "POST", "path": "/v1/search", "port": 443, "query": {}, "scheme": "https"}, "route": {"id": "glue-api", "labels": {"llmflow-roles": "viewer,developer,operator,platform-admin"}, "plugins": {"opa": {"host": "http://opa:8181", "policy": "llmflow/apisix", "send_headers_upstream": ["X-Tenant-Id"], "with_route": true}, "openid-connect": {"bearer_only": true, "client_id": "apisix", "discovery": "http://keycloak/realms/llmflow/.well-known/openid-configuration", "use_jwks": true}}, "uris": ["/v1/search", "/v1/kb/*"]}, "type": "http", "var": {"remote_addr": "10.1.2.3", "remote_port": "53412", "server_addr": "10.0.0.5", "server_port": "9443", "timestamp": 1767225600}}
	d.allow == false
	d.status_code == 401
	d.headers == {}
	contains(d.reason, "token audience is not accepted")
}

# role not admitted on the route
test_apisix_007_role_not_admitted_on_the_route if {
	d := apisix.decision with input as {"request": {"headers": {"authorization": "Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6InRlc3QiLCJ0eXAiOiJKV1QifQ.eyJhdWQiOiJsbG1mbG93LWFwaSIsInJlYWxtX2FjY2VzcyI6eyJyb2xlcyI6WyJvZmZsaW5lX2FjY2VzcyJdfSwic3ViIjoidTEiLCJ0ZW5hbnQiOiJkZXB0LWhyIn0.c2ln", "host": "llm.example.com", "user-agent": "curl/8.5.0", "x-access-token": "eyJhbGciOiJSUzI1NiIsImtpZCI6InRlc3QiLCJ0eXAiOiJKV1QifQ.eyJhdWQiOiJsbG1mbG93LWFwaSIsInJlYWxtX2FjY2VzcyI6eyJyb2xlcyI6WyJvZmZsaW5lX2FjY2VzcyJdfSwic3ViIjoidTEiLCJ0ZW5hbnQiOiJkZXB0LWhyIn0.c2ln"}, "host": "llm.example.com", "method": "POST", "path": "/v1/search", "port": 443, "query": {}, "scheme": "https"}, "route": {"id": "glue-api", "labels": {"llmflow-roles": "viewer,developer,operator,platform-admin"}, "plugins": {"opa": {"host": "http://opa:8181", "policy": "llmflow/apisix", "send_headers_upstream": ["X-Tenant-Id"], "with_route": true}, "openid-connect": {"bearer_only": true, "client_id": "apisix", "discovery": "http://keycloak/realms/llmflow/.well-known/openid-configuration", "use_jwks": true}}, "uris": ["/v1/search", "/v1/kb/*"]}, "type": "http", "var": {"remote_addr": "10.1.2.3", "remote_port": "53412", "server_addr": "10.0.0.5", "server_port": "9443", "timestamp": 1767225600}}
	d.allow == false
	d.status_code == 403
	d.headers == {}
	contains(d.reason, "no role of the token is admitted on this route")
}

# forged tenant header
test_apisix_008_forged_tenant_header if {
	d := apisix.decision with input as {"request": {"headers": {"authorization": "Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6InRlc3QiLCJ0eXAiOiJKV1QifQ.eyJhdWQiOiJsbG1mbG93LWFwaSIsInJlYWxtX2FjY2VzcyI6eyJyb2xlcyI6WyJ2aWV3ZXIiXX0sInN1YiI6InUxIiwidGVuYW50IjoiZGVwdC1ociJ9.c2ln", "host": "llm.example.com", "user-agent": "curl/8.5.0", "x-access-token": "eyJhbGciOiJSUzI1NiIsImtpZCI6InRlc3QiLCJ0eXAiOiJKV1QifQ.eyJhdWQiOiJsbG1mbG93LWFwaSIsInJlYWxtX2FjY2VzcyI6eyJyb2xlcyI6WyJ2aWV3ZXIiXX0sInN1YiI6InUxIiwidGVuYW50IjoiZGVwdC1ociJ9.c2ln", "x-tenant-id": "dept-finance"}, "host": "llm.example.com", "method": "POST", "path": "/v1/search", "port": 443, "query": {}, "scheme": "https"}, "route": {"id": "glue-api", "labels": {"llmflow-roles": "viewer,developer,operator,platform-admin"}, "plugins": {"opa": {"host": "http://opa:8181", "policy": "llmflow/apisix", "send_headers_upstream": ["X-Tenant-Id"], "with_route": true}, "openid-connect": {"bearer_only": true, "client_id": "apisix", "discovery": "http://keycloak/realms/llmflow/.well-known/openid-configuration", "use_jwks": true}}, "uris": ["/v1/search", "/v1/kb/*"]}, "type": "http", "var": {"remote_addr": "10.1.2.3", "remote_port": "53412", "server_addr": "10.0.0.5", "server_port": "9443", "timestamp": 1767225600}}
	d.allow == false
	d.status_code == 403
	d.headers == {}
	contains(d.reason, "X-Tenant-Id header conflicts with the token tenant")
}

# repeated tenant header
test_apisix_009_repeated_tenant_header if {
	d := apisix.decision with input as {"request": {"headers": {"authorization": "Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6InRlc3QiLCJ0eXAiOiJKV1QifQ.eyJhdWQiOiJsbG1mbG93LWFwaSIsInJlYWxtX2FjY2VzcyI6eyJyb2xlcyI6WyJ2aWV3ZXIiXX0sInN1YiI6InUxIiwidGVuYW50IjoiZGVwdC1ociJ9.c2ln", "host": "llm.example.com", "user-agent": "curl/8.5.0", "x-access-token": "eyJhbGciOiJSUzI1NiIsImtpZCI6InRlc3QiLCJ0eXAiOiJKV1QifQ.eyJhdWQiOiJsbG1mbG93LWFwaSIsInJlYWxtX2FjY2VzcyI6eyJyb2xlcyI6WyJ2aWV3ZXIiXX0sInN1YiI6InUxIiwidGVuYW50IjoiZGVwdC1ociJ9.c2ln", "x-tenant-id": ["dept-hr", "dept-finance"]}, "host": "llm.example.com", "method": "POST", "path": "/v1/search", "port": 443, "query": {}, "scheme": "https"}, "route": {"id": "glue-api", "labels": {"llmflow-roles": "viewer,developer,operator,platform-admin"}, "plugins": {"opa": {"host": "http://opa:8181", "policy": "llmflow/apisix", "send_headers_upstream": ["X-Tenant-Id"], "with_route": true}, "openid-connect": {"bearer_only": true, "client_id": "apisix", "discovery": "http://keycloak/realms/llmflow/.well-known/openid-configuration", "use_jwks": true}}, "uris": ["/v1/search", "/v1/kb/*"]}, "type": "http", "var": {"remote_addr": "10.1.2.3", "remote_port": "53412", "server_addr": "10.0.0.5", "server_port": "9443", "timestamp": 1767225600}}
	d.allow == false
	d.status_code == 403
	d.headers == {}
	contains(d.reason, "repeated X-Tenant-Id header")
}

# matching tenant header is tolerated
test_apisix_010_matching_tenant_header_is_tolerated if {
	d := apisix.decision with input as {"request": {"headers": {"authorization": "Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6InRlc3QiLCJ0eXAiOiJKV1QifQ.eyJhdWQiOiJsbG1mbG93LWFwaSIsInJlYWxtX2FjY2VzcyI6eyJyb2xlcyI6WyJ2aWV3ZXIiXX0sInN1YiI6InUxIiwidGVuYW50IjoiZGVwdC1ociJ9.c2ln", "host": "llm.example.com", "user-agent": "curl/8.5.0", "x-access-token": "eyJhbGciOiJSUzI1NiIsImtpZCI6InRlc3QiLCJ0eXAiOiJKV1QifQ.eyJhdWQiOiJsbG1mbG93LWFwaSIsInJlYWxtX2FjY2VzcyI6eyJyb2xlcyI6WyJ2aWV3ZXIiXX0sInN1YiI6InUxIiwidGVuYW50IjoiZGVwdC1ociJ9.c2ln", "x-tenant-id": "dept-hr"}, "host": "llm.example.com", "method": "POST", "path": "/v1/search", "port": 443, "query": {}, "scheme": "https"}, "route": {"id": "glue-api", "labels": {"llmflow-roles": "viewer,developer,operator,platform-admin"}, "plugins": {"opa": {"host": "http://opa:8181", "policy": "llmflow/apisix", "send_headers_upstream": ["X-Tenant-Id"], "with_route": true}, "openid-connect": {"bearer_only": true, "client_id": "apisix", "discovery": "http://keycloak/realms/llmflow/.well-known/openid-configuration", "use_jwks": true}}, "uris": ["/v1/search", "/v1/kb/*"]}, "type": "http", "var": {"remote_addr": "10.1.2.3", "remote_port": "53412", "server_addr": "10.0.0.5", "server_port": "9443", "timestamp": 1767225600}}
	d.allow == true
	d.status_code == 200
	d.headers == {"X-Tenant-Id": "dept-hr"}
	contains(d.reason, "tenant dept-hr")
}

# forged tenant query parameter
test_apisix_011_forged_tenant_query_parameter if {
	d := apisix.decision with input as {"request": {"headers": {"authorization": "Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6InRlc3QiLCJ0eXAiOiJKV1QifQ.eyJhdWQiOiJsbG1mbG93LWFwaSIsInJlYWxtX2FjY2VzcyI6eyJyb2xlcyI6WyJ2aWV3ZXIiXX0sInN1YiI6InUxIiwidGVuYW50IjoiZGVwdC1ociJ9.c2ln", "host": "llm.example.com", "user-agent": "curl/8.5.0", "x-access-token": "eyJhbGciOiJSUzI1NiIsImtpZCI6InRlc3QiLCJ0eXAiOiJKV1QifQ.eyJhdWQiOiJsbG1mbG93LWFwaSIsInJlYWxtX2FjY2VzcyI6eyJyb2xlcyI6WyJ2aWV3ZXIiXX0sInN1YiI6InUxIiwidGVuYW50IjoiZGVwdC1ociJ9.c2ln"}, "host": "llm.example.com", "method": "POST", "path": "/v1/search", "port": 443, "query": {"tenant": "dept-finance"}, "scheme": "https"}, "route": {"id": "glue-api", "labels": {"llmflow-roles": "viewer,developer,operator,platform-admin"}, "plugins": {"opa": {"host": "http://opa:8181", "policy": "llmflow/apisix", "send_headers_upstream": ["X-Tenant-Id"], "with_route": true}, "openid-connect": {"bearer_only": true, "client_id": "apisix", "discovery": "http://keycloak/realms/llmflow/.well-known/openid-configuration", "use_jwks": true}}, "uris": ["/v1/search", "/v1/kb/*"]}, "type": "http", "var": {"remote_addr": "10.1.2.3", "remote_port": "53412", "server_addr": "10.0.0.5", "server_port": "9443", "timestamp": 1767225600}}
	d.allow == false
	d.status_code == 403
	d.headers == {}
	contains(d.reason, "tenant query parameter conflicts with the token tenant")
}

# undecodable token
test_apisix_012_undecodable_token if {
	d := apisix.decision with input as {"request": {"headers": {"authorization": "Bearer not-a-jwt", "host": "llm.example.com", "user-agent": "curl/8.5.0", "x-access-token": "not-a-jwt"}, "host": "llm.example.com", "method": "POST", "path": "/v1/search", "port": 443, "query": {}, "scheme": "https"}, "route": {"id": "glue-api", "labels": {"llmflow-roles": "viewer,developer,operator,platform-admin"}, "plugins": {"opa": {"host": "http://opa:8181", "policy": "llmflow/apisix", "send_headers_upstream": ["X-Tenant-Id"], "with_route": true}, "openid-connect": {"bearer_only": true, "client_id": "apisix", "discovery": "http://keycloak/realms/llmflow/.well-known/openid-configuration", "use_jwks": true}}, "uris": ["/v1/search", "/v1/kb/*"]}, "type": "http", "var": {"remote_addr": "10.1.2.3", "remote_port": "53412", "server_addr": "10.0.0.5", "server_port": "9443", "timestamp": 1767225600}}
	d.allow == false
	d.status_code == 401
	d.headers == {}
	contains(d.reason, "bearer token cannot be decoded")
}

# route without openid-connect
test_apisix_013_route_without_openid_connect if {
	d := apisix.decision with input as {"request": {"headers": {"authorization": "Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6InRlc3QiLCJ0eXAiOiJKV1QifQ.eyJhdWQiOiJsbG1mbG93LWFwaSIsInJlYWxtX2FjY2VzcyI6eyJyb2xlcyI6WyJ2aWV3ZXIiXX0sInN1YiI6InUxIiwidGVuYW50IjoiZGVwdC1ociJ9.c2ln", "host": "llm.example.com", "user-agent": "curl/8.5.0", "x-access-token": "eyJhbGciOiJSUzI1NiIsImtpZCI6InRlc3QiLCJ0eXAiOiJKV1QifQ.eyJhdWQiOiJsbG1mbG93LWFwaSIsInJlYWxtX2FjY2VzcyI6eyJyb2xlcyI6WyJ2aWV3ZXIiXX0sInN1YiI6InUxIiwidGVuYW50IjoiZGVwdC1ociJ9.c2ln"}, "host": "llm.example.com", "method": "POST", "path": "/v1/search", "port": 443, "query": {}, "scheme": "https"}, "route": {"id": "glue-api", "labels": {"llmflow-roles": "viewer,developer,operator,platform-admin"}, "plugins": {"opa": {"host": "http://opa:8181", "policy": "llmflow/apisix", "send_headers_upstream": ["X-Tenant-Id"], "with_route": true}}, "uris": ["/v1/search", "/v1/kb/*"]}, "type": "http", "var": {"remote_addr": "10.1.2.3", "remote_port": "53412", "server_addr": "10.0.0.5", "server_port": "9443", "timestamp": 1767225600}}
	d.allow == false
	d.status_code == 500
	d.headers == {}
	contains(d.reason, "route has no openid-connect plugin: token not verified")
}

# opa plugin without with_route
test_apisix_014_opa_plugin_without_with_route if {
	d := apisix.decision with input as {"request": {"headers": {"authorization": "Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6InRlc3QiLCJ0eXAiOiJKV1QifQ.eyJhdWQiOiJsbG1mbG93LWFwaSIsInJlYWxtX2FjY2VzcyI6eyJyb2xlcyI6WyJ2aWV3ZXIiXX0sInN1YiI6InUxIiwidGVuYW50IjoiZGVwdC1ociJ9.c2ln", "host": "llm.example.com", "user-agent": "curl/8.5.0", "x-access-token": "eyJhbGciOiJSUzI1NiIsImtpZCI6InRlc3QiLCJ0eXAiOiJKV1QifQ.eyJhdWQiOiJsbG1mbG93LWFwaSIsInJlYWxtX2FjY2VzcyI6eyJyb2xlcyI6WyJ2aWV3ZXIiXX0sInN1YiI6InUxIiwidGVuYW50IjoiZGVwdC1ociJ9.c2ln"}, "host": "llm.example.com", "method": "POST", "path": "/v1/search", "port": 443, "query": {}, "scheme": "https"}, "type": "http", "var": {"remote_addr": "10.1.2.3", "remote_port": "53412", "server_addr": "10.0.0.5", "server_port": "9443", "timestamp": 1767225600}}
	d.allow == false
	d.status_code == 500
	d.headers == {}
	contains(d.reason, "with_route")
}

# service account roles claim
test_apisix_015_service_account_roles_claim if {
	d := apisix.decision with input as {"request": {"headers": {"authorization": "Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6InRlc3QiLCJ0eXAiOiJKV1QifQ.eyJhdWQiOlsibGxtZmxvdy1hcGkiXSwiYXpwIjoiZXJwIiwicm9sZXMiOlsidmlld2VyIl0sInN1YiI6InN2YyIsInRlbmFudCI6ImRlcHQtZmluYW5jZSJ9.c2ln", "host": "llm.example.com", "user-agent": "curl/8.5.0", "x-access-token": "eyJhbGciOiJSUzI1NiIsImtpZCI6InRlc3QiLCJ0eXAiOiJKV1QifQ.eyJhdWQiOlsibGxtZmxvdy1hcGkiXSwiYXpwIjoiZXJwIiwicm9sZXMiOlsidmlld2VyIl0sInN1YiI6InN2YyIsInRlbmFudCI6ImRlcHQtZmluYW5jZSJ9.c2ln"}, "host": "llm.example.com", "method": "POST", "path": "/v1/search", "port": 443, "query": {}, "scheme": "https"}, "route": {"id": "glue-api", "labels": {"llmflow-roles": "viewer,developer,operator,platform-admin"}, "plugins": {"opa": {"host": "http://opa:8181", "policy": "llmflow/apisix", "send_headers_upstream": ["X-Tenant-Id"], "with_route": true}, "openid-connect": {"bearer_only": true, "client_id": "apisix", "discovery": "http://keycloak/realms/llmflow/.well-known/openid-configuration", "use_jwks": true}}, "uris": ["/v1/search", "/v1/kb/*"]}, "type": "http", "var": {"remote_addr": "10.1.2.3", "remote_port": "53412", "server_addr": "10.0.0.5", "server_port": "9443", "timestamp": 1767225600}}
	d.allow == true
	d.status_code == 200
	d.headers == {"X-Tenant-Id": "dept-finance"}
	contains(d.reason, "tenant dept-finance")
}
