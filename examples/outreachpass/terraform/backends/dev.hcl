# terraform init -backend-config=backends/dev.hcl
bucket       = "outreachpass-terraform-state"
key          = "outreachpass/dev/terraform.tfstate"
region       = "us-east-1"
use_lockfile = true
encrypt      = true
