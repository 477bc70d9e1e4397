"""Placeholder of the OutreachPass API until opcd's first deploy (Terraform creates the function with it)."""

import json


def handler(event, context):
    body = {"status": "not deployed", "version": "bootstrap", "detail": "deploy the backend with opcd"}
    return {"statusCode": 503, "headers": {"content-type": "application/json"}, "body": json.dumps(body)}
