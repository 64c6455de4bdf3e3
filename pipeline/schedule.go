package pipeline

import "github.com/robfig/cron/v3"

// cronParser reads the five-field expressions of `schedules:` and the
// @weekly style descriptors.
var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

func checkCron(expr string) error {
	_, err := cronParser.Parse(expr)
	return err
}
