"""How the engine's entity types are named in other label sets (for evaluation)."""

from __future__ import annotations

# Entity type → label of the ko-pii corpora (Marker-Inc-Korea/ko-pii).
KO_PII_LABELS: dict[str, str | None] = {
    "PERSON": "PERSON",
    "PHONE_NUMBER": "PHONE",
    "FAX_NUMBER": "FAX",
    "EMAIL_ADDRESS": "EMAIL",
    "ADDRESS": "ADDRESS",
    "KR_RRN": "RRN",
    "KR_FRN": "FRN",
    "KR_BRN": "BUSINESS_REG",
    "KR_CORP_REG": "CORP_REG",
    "KR_PASSPORT": "PASSPORT",
    "KR_DRIVER_LICENSE": "DRIVER_LICENSE",
    "KR_HEALTH_INSURANCE": "MEDICAL_INSURANCE",
    "KR_BANK_ACCOUNT": "ACCOUNT",
    "CREDIT_CARD": "CARD",
    "KR_VEHICLE_PLATE": "VEHICLE",
    "IP_ADDRESS": "IP",
    "URL": "URL",
    "DATE_OF_BIRTH": "DT_BIRTH",
    "AGE": "AGE",
    "KR_EMPLOYEE_ID": "EMPLOYEE_ID",
    "KR_DOC_ID": "DOC_ID",
    "KR_PETITION_ID": "PETITION_ID",
    "KR_COURT_CASE": "COURT_CASE",
    "KR_PNU": "PNU",
    "KR_PRESCRIPTION": "PRESCRIPTION",
    "KR_EDI_DRUG": "EDI_DRUG",
    "POSTAL_CODE": "POSTAL_CODE",
    "HEIGHT": "HEIGHT",
    "WEIGHT": "WEIGHT",
    "EDUCATION": "EDUCATION",
    "MAJOR": "MAJOR",
    "POSITION": "POSITION",
}

# Entity type → presidio-research label, where it differs from the type itself.
PRESIDIO_RESEARCH_LABELS: dict[str, str | None] = {
    "FAX_NUMBER": "PHONE_NUMBER",
    "ADDRESS": "LOCATION",
    "URL": "DOMAIN_NAME",
    "POSTAL_CODE": "ZIP_CODE",
}
