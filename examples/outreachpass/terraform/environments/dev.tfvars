environment = "dev"

# The artifact bucket and the ECR repository are shared by both environments: prod's state owns them.
manage_shared = false

# db_instance_identifier = "outreachpass-dev"   # adds the DB CPU alarm
# alarm_topic_arn        = "arn:aws:sns:us-east-1:123456789012:outreachpass-alarms"
