-- AlterTable: additive and nullable, so the colour still on v1 keeps working.
ALTER TABLE "Shift" ADD COLUMN "notes" TEXT;
