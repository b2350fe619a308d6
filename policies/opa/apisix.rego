# LLMFlow gateway policy for APISIX's `opa` plugin (policy: llmflow/apisix, with_route: true).
#
# APISIX (apisix/plugins/opa/helper.lua, 3.18) posts
#   {"input": {"type": "http",
#              "request": {"scheme", "method", "host", "port", "path", "headers", "query"},
#              "var": {"server_addr", "server_port", "remote_addr", "remote_port", "timestamp"},
#              "route": {... the matched route, upstream removed ...}}}
# to /v1/data/llmflow/apisix and reads `result` = {allow, reason, status_code, headers}.
# Header names arrive lower-cased; a repeated header arrives as an array. openid-connect runs
# in the rewrite phase, before this access-phase plugin: it has verified the bearer token
# (signature by JWKS, issuer, exp, audience present) and set X-Access-Token to that token after
# removing any client-supplied X-Access-Token. This policy therefore only *decodes* the token.
# On allow, APISIX copies headers listed in send_headers_upstream (X-Tenant-Id) from the result
# to the upstream request and clears a client-supplied value of the same name.
package llmflow.apisix

default decision := {
	"allow": false,
	"reason": "denied by default",
	"status_code": 403,
	"headers": {},
}

request := object.get(input, "request", {})

headers := object.get(request, "headers", {})

query := object.get(request, "query", {})

route := object.get(input, "route", {})

route_plugins := object.get(route, "plugins", {})

route_labels := object.get(route, "labels", {})

# data.llmflow.gateway: {"audiences": [...], "tenant_claim": "tenant", "tenant_header": ...}.
# Spelled out: reading data.llmflow as a whole would include this package and recurse.
default gateway := {}

gateway := data.llmflow.gateway

tenant_claim := object.get(gateway, "tenant_claim", "tenant")

tenant_header := object.get(gateway, "tenant_header", "X-Tenant-Id")

audiences := {a | some a in object.get(gateway, "audiences", [])}

tenant_pattern := `^[a-z0-9][a-z0-9_-]{0,63}$`

# A header with one value; a repeated header is ambiguous and never used.
single_header(name) := v if {
	v := headers[name]
	is_string(v)
}

token := t if {
	t := single_header("x-access-token")
	t != ""
}

token := t if {
	not single_header("x-access-token")
	parts := split(single_header("authorization"), " ")
	count(parts) == 2
	lower(parts[0]) == "bearer"
	t := parts[1]
}

claims := payload if {
	[_, payload, _] := io.jwt.decode(token)
	is_object(payload)
}

tenant := t if {
	t := claims[tenant_claim]
	is_string(t)
	regex.match(tenant_pattern, t)
}

token_roles contains r if {
	some r in claims.realm_access.roles
	is_string(r)
}

token_roles contains r if {
	some r in claims.roles
	is_string(r)
}

token_audiences contains a if {
	a := claims.aud
	is_string(a)
}

token_audiences contains a if {
	some a in claims.aud
	is_string(a)
}

# Roles a route admits, from its label `llmflow-roles: viewer,developer` (none = any role).
route_roles := {trim_space(r) | some r in split(route_labels["llmflow-roles"], ",")}

values_of(v) := {v} if is_string(v)

values_of(v) := {x | some x in v; is_string(x)} if is_array(v)

values_of(v) := {""} if v == true

# ---------------------------------------------------------------- problems: [status, reason]

problems contains [500, "opa plugin must send the route (with_route: true)"] if not input.route

problems contains [500, "route has no openid-connect plugin: token not verified"] if {
	input.route
	not route_plugins["openid-connect"]
}

problems contains [500, "openid-connect on this route must be bearer_only"] if {
	route_plugins["openid-connect"]
	not route_plugins["openid-connect"].bearer_only == true
}

problems contains [401, "no bearer token in the request"] if not token

problems contains [401, "bearer token cannot be decoded"] if {
	token
	not claims
}

problems contains [403, "token has no valid tenant claim"] if {
	claims
	not tenant
}

problems contains [401, "token audience is not accepted"] if {
	claims
	count(audiences) > 0
	count(token_audiences & audiences) == 0
}

problems contains [403, "no role of the token is admitted on this route"] if {
	claims
	route_labels["llmflow-roles"]
	count(token_roles & route_roles) == 0
}

problems contains [403, "repeated X-Tenant-Id header"] if is_array(headers["x-tenant-id"])

problems contains [403, "X-Tenant-Id header conflicts with the token tenant"] if {
	tenant
	some v in values_of(headers["x-tenant-id"])
	v != tenant
}

problems contains [403, "tenant query parameter conflicts with the token tenant"] if {
	tenant
	some name in {"tenant", "tenant_id", "tenantId"}
	some v in values_of(query[name])
	v != tenant
}

problems contains [400, "request type is not http"] if object.get(input, "type", "") != "http"

# ---------------------------------------------------------------- decision

decision := {
	"allow": false,
	"reason": concat("; ", sort({p[1] | some p in problems})),
	"status_code": min({p[0] | some p in problems}),
	"headers": {},
} if {
	count(problems) > 0
} else := {
	"allow": true,
	"reason": sprintf("tenant %v", [tenant]),
	"status_code": 200,
	"headers": {tenant_header: tenant},
} if {
	tenant
}

allow := decision.allow
