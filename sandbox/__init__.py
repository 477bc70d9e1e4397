"""The embedded AWS used by ``make demo`` and the tests. Product code never imports it.

It runs moto's server on 127.0.0.1 and adds what moto lacks:

* an invoke shim: invoking a Lambda version or alias runs the real handler from the zip that
  version was published from (moto alone only echoes the event back);
* an API Gateway stand-in that serves each environment's health URL by invoking the function's
  ``live`` alias with an HTTP API (v2) event;
* seeding of what Terraform would have created for the configured environments.
"""
