"""Placeholder of the OutreachPass worker until opcd's first deploy (Terraform creates the function with it)."""


def handler(event, context):
    return {"status": "not deployed", "version": "bootstrap", "detail": "deploy the worker with opcd"}
