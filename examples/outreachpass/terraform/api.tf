# The HTTP API in front of the backend: every route goes to the backend's `live` alias, so a
# deploy moving `live` moves the API's traffic too (canary and linear splits included).

resource "aws_apigatewayv2_api" "api" {
  name          = local.functions.backend.name
  description   = "OutreachPass API (${var.environment})"
  protocol_type = "HTTP"
}

resource "aws_apigatewayv2_integration" "backend" {
  api_id                 = aws_apigatewayv2_api.api.id
  description            = "${local.functions.backend.name}:${local.live_alias}"
  integration_type       = "AWS_PROXY"
  integration_method     = "POST"
  integration_uri        = aws_lambda_alias.live["backend"].invoke_arn
  payload_format_version = "2.0"
  timeout_milliseconds   = 30000
}

resource "aws_apigatewayv2_route" "default" {
  api_id    = aws_apigatewayv2_api.api.id
  route_key = "$default"
  target    = "integrations/${aws_apigatewayv2_integration.backend.id}"
}

resource "aws_apigatewayv2_stage" "default" {
  api_id      = aws_apigatewayv2_api.api.id
  name        = "$default"
  auto_deploy = true
}

# API Gateway may invoke the alias (the permission is on `live`, not on the function).
resource "aws_lambda_permission" "api_gateway" {
  statement_id  = "AllowApiGatewayInvoke"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.app["backend"].function_name
  qualifier     = aws_lambda_alias.live["backend"].name
  principal     = "apigateway.amazonaws.com"
  source_arn    = "${aws_apigatewayv2_api.api.execution_arn}/*"
}
