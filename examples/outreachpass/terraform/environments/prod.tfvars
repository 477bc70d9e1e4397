environment = "prod"

# prod's state owns what both environments share: the artifact bucket and the ECR repository.
manage_shared = true

# db_instance_identifier = "outreachpass-prod"   # adds the DB CPU alarm
# alarm_topic_arn        = "arn:aws:sns:us-east-1:123456789012:outreachpass-alarms"
